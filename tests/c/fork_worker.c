/*
 * A worker that outlives its parent: the parent loads the module, signs once and forks one
 * worker; the worker calls C_Initialize, signs once and then waits. The parent then signs again
 * (the test makes the card mute and kills the parent with SIGKILL inside that operation), and
 * the worker signs once more when told to.
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I include -o fork_worker tests/c/fork_worker.c -ldl
 *   ./fork_worker <module.so> <directory>
 *
 * Steps are driven by files the test creates in <directory>: "parent-go" (the parent signs
 * again), "worker-go" (the worker signs again). The parent prints to stdout, the worker to
 * <directory>/worker.out, each line with one write(2): "parent pid <n>", "worker pid <n>",
 * "signature <message> <hex r||s>", "worker ready", "parent signing", "<who>: <call> failed:
 * 0x...". The worker exits with _exit, 0 on success.
 * Built and run by tests/stack_fork.rs.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "signer.h"

/* Waits (at most two minutes) for the file <dir>/<name>. */
static int wait_for_file(const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	struct stat st;
	struct timespec pause = { 0, 20 * 1000 * 1000 };
	for (int i = 0; i < 6000; i++) {
		if (stat(path, &st) == 0)
			return 1;
		nanosleep(&pause, NULL);
	}
	say("%s never appeared", path);
	return 0;
}


int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s <module.so> <directory>\n", argv[0]);
		return 2;
	}
	const char *dir = argv[2];
	if (!load_module(argv[1]))
		return 1;
	say("parent pid %ld", (long)getpid());
	CK_SESSION_HANDLE session;
	CK_OBJECT_HANDLE key;
	if (!initialize("parent") || !open_key("parent", &session, &key) ||
	    !sign("parent", session, key, 0))
		return 1;

	pid_t worker = fork();
	if (worker < 0) {
		perror("fork");
		return 1;
	}
	if (worker == 0) {
		/* Not the parent's pipes: whoever reads them sees them end when the parent dies. */
		char path[4096];
		snprintf(path, sizeof path, "%s/worker.out", dir);
		int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
		if (out < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
			_exit(1);
		close(out);
		say("worker pid %ld", (long)getpid());
		if (!initialize("worker") || !open_key("worker", &session, &key) ||
		    !sign("worker", session, key, 0))
			_exit(1);
		say("worker ready");
		if (!wait_for_file(dir, "worker-go") || !sign("worker", session, key, 1))
			_exit(1);
		_exit(0);
	}

	if (!wait_for_file(dir, "parent-go"))
		return 1;
	say("parent signing");
	int ok = sign("parent", session, key, 1);
	int status = 0;
	waitpid(worker, &status, 0);
	return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
