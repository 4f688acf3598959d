/*
 * A server that forks workers: the parent loads the module, calls C_Initialize and signs once
 * (so it holds the modem port, its turn lock and a logical channel), then forks N children and
 * keeps signing until they are done. Each child calls C_Initialize again (odd-numbered children
 * first call C_Finalize, as some applications do), finds the key with CKA_ID 01, signs S times
 * and leaves with _exit, without C_Finalize.
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I include -o fork_sign tests/c/fork_sign.c -ldl
 *   ./fork_sign <module.so> <children> <signatures per child>
 *
 * Every signature is one line "signature <message> <hex r||s>" written with one write(2), so
 * lines of different processes never mix. Other lines: "child <n> C_GetSlotList before
 * C_Initialize: 0x..." (the CK_RV a child gets from the state it inherited), "parent signed <k>
 * while children ran", "<who>: <call> failed: 0x...". Exit 0 when every process succeeded.
 * Built and run by tests/stack_fork.rs.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "signer.h"


static void child(int number, int signatures)
{
	char who[32];
	snprintf(who, sizeof who, "child%d", number);
	if (number % 2 == 1) {
		if (!check(who, "C_Finalize (inherited state)", f->C_Finalize(NULL)))
			_exit(1);
	} else {
		CK_ULONG n = 0;
		CK_RV rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
		say("child %d C_GetSlotList before C_Initialize: 0x%08lX", number, (unsigned long)rv);
	}
	if (!initialize(who))
		_exit(1);
	CK_SESSION_HANDLE session;
	CK_OBJECT_HANDLE key;
	if (!open_key(who, &session, &key))
		_exit(1);
	for (int i = 0; i < signatures; i++)
		if (!sign(who, session, key, i))
			_exit(1);
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s <module.so> <children> <signatures per child>\n", argv[0]);
		return 2;
	}
	int children = atoi(argv[2]);
	int signatures = atoi(argv[3]);
	if (children < 1 || children > 64 || signatures < 1) {
		fprintf(stderr, "children: 1..64, signatures: at least 1\n");
		return 2;
	}
	if (!load_module(argv[1]))
		return 1;
	if (!initialize("parent"))
		return 1;
	CK_SESSION_HANDLE session;
	CK_OBJECT_HANDLE key;
	int signed_count = 0;
	if (!open_key("parent", &session, &key) || !sign("parent", session, key, signed_count++))
		return 1;

	pid_t pids[64];
	for (int i = 0; i < children; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("fork");
			return 1;
		}
		if (pids[i] == 0)
			child(i, signatures);
	}

	int failed = 0;
	int running = children;
	int while_children_ran = 0;
	while (running > 0) {
		if (!sign("parent", session, key, signed_count++))
			failed = 1;
		else
			while_children_ran++;
		pid_t pid = 0;
		int status;
		while (running > 0 && (pid = waitpid(-1, &status, WNOHANG)) > 0) {
			running--;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				say("child pid %ld ended with status 0x%x", (long)pid, status);
				failed = 1;
			}
		}
		if (pid < 0 && errno != EINTR) {
			perror("waitpid");
			return 1;
		}
		if (failed)
			break;
	}
	say("parent signed %d while children ran", while_children_ran);
	if (failed) {
		for (int i = 0; i < children; i++)
			waitpid(pids[i], NULL, 0);
		return 1;
	}
	if (!check("parent", "C_CloseSession", f->C_CloseSession(session)) ||
	    !check("parent", "C_Finalize", f->C_Finalize(NULL)))
		return 1;
	return 0;
}
