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

#include "pkcs11.h"

static CK_FUNCTION_LIST *f;

/* One line, one write(2): atomic on a pipe for lines shorter than PIPE_BUF. */
static void say(const char *format, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, format);
	int n = vsnprintf(line, sizeof line - 1, format, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	ssize_t done = 0;
	while (done < n) {
		ssize_t w = write(STDOUT_FILENO, line + done, (size_t)(n - done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		done += w;
	}
}

static int check(const char *who, const char *what, CK_RV rv)
{
	if (rv != CKR_OK) {
		say("%s: %s failed: 0x%08lX", who, what, (unsigned long)rv);
		return 0;
	}
	return 1;
}

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

static int initialize_and_find_key(const char *who, CK_SESSION_HANDLE *session,
				   CK_OBJECT_HANDLE *key)
{
	CK_C_INITIALIZE_ARGS args;
	memset(&args, 0, sizeof args);
	args.flags = CKF_OS_LOCKING_OK;
	if (!check(who, "C_Initialize", f->C_Initialize(&args)))
		return 0;
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	if (!check(who, "C_GetSlotList", f->C_GetSlotList(CK_TRUE, slots, &n)))
		return 0;
	if (n == 0) {
		say("%s: no slot with a token", who);
		return 0;
	}
	if (!check(who, "C_OpenSession",
		   f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, NULL, NULL, session)))
		return 0;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_BYTE id = 0x01;
	CK_ATTRIBUTE tpl[] = {
		{ CKA_CLASS, &cls, sizeof cls },
		{ CKA_ID, &id, sizeof id },
	};
	CK_ULONG found = 0;
	if (!check(who, "C_FindObjectsInit", f->C_FindObjectsInit(*session, tpl, 2)) ||
	    !check(who, "C_FindObjects", f->C_FindObjects(*session, key, 1, &found)) ||
	    !check(who, "C_FindObjectsFinal", f->C_FindObjectsFinal(*session)))
		return 0;
	if (found != 1) {
		say("%s: no private key with ID 01", who);
		return 0;
	}
	return 1;
}

static int sign(const char *who, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key, int number)
{
	char message[128];
	snprintf(message, sizeof message, "%s-pid%ld-signature%d", who, (long)getpid(), number);
	CK_MECHANISM mech = { CKM_ECDSA_SHA256, NULL, 0 };
	CK_BYTE sig[128];
	CK_ULONG sig_len = sizeof sig;
	if (!check(who, "C_SignInit", f->C_SignInit(session, &mech, key)) ||
	    !check(who, "C_Sign",
		   f->C_Sign(session, (CK_BYTE *)message, strlen(message), sig, &sig_len)))
		return 0;
	char hex[2 * sizeof sig + 1];
	for (CK_ULONG i = 0; i < sig_len; i++)
		snprintf(hex + 2 * i, 3, "%02x", sig[i]);
	say("signature %s %s", message, hex);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s <module.so> <directory>\n", argv[0]);
		return 2;
	}
	const char *dir = argv[2];
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	CK_C_GetFunctionList get_function_list =
		(CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (get_function_list == NULL || get_function_list(&f) != CKR_OK) {
		fprintf(stderr, "C_GetFunctionList failed\n");
		return 1;
	}
	say("parent pid %ld", (long)getpid());
	CK_SESSION_HANDLE session;
	CK_OBJECT_HANDLE key;
	if (!initialize_and_find_key("parent", &session, &key) || !sign("parent", session, key, 0))
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
		if (!initialize_and_find_key("worker", &session, &key) ||
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
