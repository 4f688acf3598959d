/*
 * Two instances of the module in one process, as when an application loads the module itself
 * and again through a library (Anjay and the libp11 engine): the same .so under two paths, so
 * the dynamic loader keeps two copies with separate state. Each instance is initialised and
 * signs S times from a thread of its own, at the same time as the other.
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I include -o two_instances \
 *      tests/c/two_instances.c -ldl -lpthread
 *   ./two_instances <copy1.so> <copy2.so> <signatures per instance>
 *
 * Prints one line "signature <message> <hex r||s>" per signature (one write(2) each), or
 * "<who>: <call> failed: 0x..."; exit 0 when both instances signed every time.
 * Built and run by tests/stack_two_instances.rs.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pkcs11.h"

struct instance {
	const char *who;
	const char *path;
	CK_FUNCTION_LIST *f;
	int signatures;
	int ok;
};

static void say(const char *line)
{
	size_t n = strlen(line), done = 0;
	while (done < n) {
		ssize_t w = write(STDOUT_FILENO, line + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		done += (size_t)w;
	}
}

static int check(const struct instance *in, const char *what, CK_RV rv)
{
	if (rv != CKR_OK) {
		char line[256];
		snprintf(line, sizeof line, "%s: %s failed: 0x%08lX\n", in->who, what,
			 (unsigned long)rv);
		say(line);
		return 0;
	}
	return 1;
}

static void *run(void *arg)
{
	struct instance *in = arg;
	CK_FUNCTION_LIST *f = in->f;
	CK_C_INITIALIZE_ARGS args;
	memset(&args, 0, sizeof args);
	args.flags = CKF_OS_LOCKING_OK;
	if (!check(in, "C_Initialize", f->C_Initialize(&args)))
		return NULL;
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	CK_SESSION_HANDLE session;
	if (!check(in, "C_GetSlotList", f->C_GetSlotList(CK_TRUE, slots, &n)))
		return NULL;
	if (n == 0) {
		say("no slot with a token\n");
		return NULL;
	}
	if (!check(in, "C_OpenSession",
		   f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, NULL, NULL, &session)))
		return NULL;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_BYTE id = 0x01;
	CK_ATTRIBUTE tpl[] = { { CKA_CLASS, &cls, sizeof cls }, { CKA_ID, &id, sizeof id } };
	CK_OBJECT_HANDLE key;
	CK_ULONG found = 0;
	if (!check(in, "C_FindObjectsInit", f->C_FindObjectsInit(session, tpl, 2)) ||
	    !check(in, "C_FindObjects", f->C_FindObjects(session, &key, 1, &found)) ||
	    !check(in, "C_FindObjectsFinal", f->C_FindObjectsFinal(session)) || found != 1)
		return NULL;
	for (int i = 0; i < in->signatures; i++) {
		char message[64];
		snprintf(message, sizeof message, "%s-signature%d", in->who, i);
		CK_MECHANISM mech = { CKM_ECDSA_SHA256, NULL, 0 };
		CK_BYTE sig[128];
		CK_ULONG sig_len = sizeof sig;
		if (!check(in, "C_SignInit", f->C_SignInit(session, &mech, key)) ||
		    !check(in, "C_Sign",
			   f->C_Sign(session, (CK_BYTE *)message, strlen(message), sig,
				     &sig_len)))
			return NULL;
		char line[512];
		int at = snprintf(line, sizeof line, "signature %s ", message);
		for (CK_ULONG b = 0; b < sig_len && at < (int)sizeof line - 3; b++)
			at += snprintf(line + at, sizeof line - (size_t)at, "%02x", sig[b]);
		snprintf(line + at, sizeof line - (size_t)at, "\n");
		say(line);
	}
	in->ok = check(in, "C_Finalize", f->C_Finalize(NULL));
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s COPY1.so COPY2.so SIGNATURES\n", argv[0]);
		return 2;
	}
	struct instance in[2] = {
		{ "first", argv[1], NULL, atoi(argv[3]), 0 },
		{ "second", argv[2], NULL, atoi(argv[3]), 0 },
	};
	for (int i = 0; i < 2; i++) {
		void *lib = dlopen(in[i].path, RTLD_NOW | RTLD_LOCAL);
		CK_C_GetFunctionList get = lib ? (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList")
					       : NULL;
		if (get == NULL || get(&in[i].f) != CKR_OK) {
			fprintf(stderr, "cannot load %s: %s\n", in[i].path, dlerror());
			return 1;
		}
	}
	if (in[0].f == in[1].f) {
		fprintf(stderr, "the loader gave the same instance twice\n");
		return 1;
	}
	pthread_t threads[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&threads[i], NULL, run, &in[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(threads[i], NULL);
	return in[0].ok && in[1].ok ? 0 : 1;
}
