/*
 * What the C test programs that sign from several processes share (included by one .c file
 * each): the module's function list, loading it, one-line output that lines of other processes
 * never split, CK_RV checks, a session with the private key of CKA_ID 01, and one signature
 * printed as "signature <message> <hex r||s>".
 */
#ifndef IOTSAFE_TESTS_SIGNER_H
#define IOTSAFE_TESTS_SIGNER_H

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

/* Loads the module at `path` into `f`; 0 (with a message on stderr) when it cannot. */
static int load_module(const char *path)
{
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 0;
	}
	CK_C_GetFunctionList get_function_list =
		(CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (get_function_list == NULL || get_function_list(&f) != CKR_OK) {
		fprintf(stderr, "C_GetFunctionList failed\n");
		return 0;
	}
	return 1;
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

/* Signs "<who>-pid<pid>-signature<number>" and prints it with the signature. */
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

#endif
