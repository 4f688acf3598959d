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

static int initialize(const char *who)
{
	CK_C_INITIALIZE_ARGS args;
	memset(&args, 0, sizeof args);
	args.flags = CKF_OS_LOCKING_OK;
	return check(who, "C_Initialize", f->C_Initialize(&args));
}

/* A session on the first slot with a token, and the private key with CKA_ID 01 on it. */
static int open_key(const char *who, CK_SESSION_HANDLE *session, CK_OBJECT_HANDLE *key)
{
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
	dlclose(lib);
	return 0;
}
