/*
 * ABI check of iotsafe-pkcs11 from C: dlopen the module, take its default interface through
 * C_GetInterface (PKCS#11 3.0), find the private key by label, read a vendor attribute
 * declared in include/iotsafe_pkcs11.h, and sign a message with CKM_ECDSA_SHA256.
 *
 *   cc -Wall -Wextra -Werror -I include -o sign_by_label tests/c/sign_by_label.c -ldl
 *   ./sign_by_label <module.so> <key label> <message>
 *
 * Prints "interface: ...", "key usage: N", "signature: <hex r||s>"; exit 0 on success.
 * Built and run by tests/stack_conformance.rs.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11.h"
#include "iotsafe_pkcs11.h"

#define CHECK(what, call)                                                   \
	do {                                                                    \
		CK_RV rv_ = (call);                                                 \
		if (rv_ != CKR_OK) {                                                \
			fprintf(stderr, "%s failed: 0x%08lX\n", what, (unsigned long)rv_); \
			return 1;                                                       \
		}                                                                   \
	} while (0)

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s <module.so> <key label> <message>\n", argv[0]);
		return 2;
	}
	const char *label = argv[2];
	const char *message = argv[3];

	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	CK_C_GetInterface get_interface = (CK_C_GetInterface)dlsym(lib, "C_GetInterface");
	if (get_interface == NULL) {
		fprintf(stderr, "C_GetInterface not exported\n");
		return 1;
	}
	CK_INTERFACE *iface = NULL;
	CHECK("C_GetInterface(NULL)", get_interface(NULL, NULL, &iface, 0));
	CK_VERSION *v = (CK_VERSION *)iface->pFunctionList;
	printf("interface: %s %d.%d\n", (const char *)iface->pInterfaceName, v->major, v->minor);
	if (strcmp((const char *)iface->pInterfaceName, IOTSAFE_PKCS11_INTERFACE_NAME) != 0 ||
	    v->major != 3) {
		fprintf(stderr, "default interface is not PKCS 11 3.x\n");
		return 1;
	}
	CK_FUNCTION_LIST_3_0 *f = (CK_FUNCTION_LIST_3_0 *)iface->pFunctionList;

	CK_C_INITIALIZE_ARGS args;
	memset(&args, 0, sizeof args);
	args.flags = CKF_OS_LOCKING_OK;
	CHECK("C_Initialize", f->C_Initialize(&args));

	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	CHECK("C_GetSlotList", f->C_GetSlotList(CK_TRUE, slots, &n));
	if (n == 0) {
		fprintf(stderr, "no token\n");
		return 1;
	}
	CK_SESSION_HANDLE s;
	CHECK("C_OpenSession", f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, NULL, NULL, &s));

	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tpl[] = {
		{ CKA_CLASS, &cls, sizeof cls },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE key;
	CK_ULONG found = 0;
	CHECK("C_FindObjectsInit", f->C_FindObjectsInit(s, tpl, 2));
	CHECK("C_FindObjects", f->C_FindObjects(s, &key, 1, &found));
	CHECK("C_FindObjectsFinal", f->C_FindObjectsFinal(s));
	if (found != 1) {
		fprintf(stderr, "no private key labelled %s\n", label);
		return 1;
	}

	CK_BYTE usage[8];
	CK_ATTRIBUTE vendor = { CKA_IOTSAFE_KEY_USAGE, usage, sizeof usage };
	CHECK("C_GetAttributeValue(CKA_IOTSAFE_KEY_USAGE)", f->C_GetAttributeValue(s, key, &vendor, 1));
	if (vendor.ulValueLen != 1) {
		fprintf(stderr, "CKA_IOTSAFE_KEY_USAGE has %lu bytes\n", (unsigned long)vendor.ulValueLen);
		return 1;
	}
	printf("key usage: %d\n", usage[0]);

	CK_MECHANISM mech = { CKM_ECDSA_SHA256, NULL, 0 };
	CK_BYTE sig[128];
	CK_ULONG sig_len = sizeof sig;
	CHECK("C_SignInit", f->C_SignInit(s, &mech, key));
	CHECK("C_Sign", f->C_Sign(s, (CK_BYTE *)message, strlen(message), sig, &sig_len));
	printf("signature: ");
	for (CK_ULONG i = 0; i < sig_len; i++)
		printf("%02x", sig[i]);
	printf("\n");

	CHECK("C_CloseSession", f->C_CloseSession(s));
	CHECK("C_Finalize", f->C_Finalize(NULL));
	dlclose(lib);
	return 0;
}
