/*
 * A C consumer that pairs as AWS IoT Greengrass and most PKCS#11 clients do: find the private
 * key by label, read its CKA_ID, take the public key and the certificate with that CKA_ID, and
 * sign a message with CKM_ECDSA_SHA256 (dlopen + C_GetInterface, PKCS#11 3.0).
 *
 *   cc -std=c11 -Wall -Wextra -Werror -I include -o pair_by_id tests/c/pair_by_id.c -ldl
 *   ./pair_by_id <module.so> <key label> <message>
 *
 * Prints "key id: <hex>", "key point: <hex CKA_EC_POINT of the private key>",
 * "public key point: <hex>", "certificate: <hex DER>", "signature: <hex r||s>"; exit 0 on
 * success, 1 when a call fails or not exactly one object has the key's CKA_ID.
 * Run by tests/stack_key_layouts.rs.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11.h"

#define CHECK(what, call)                                                   \
	do {                                                                    \
		CK_RV rv_ = (call);                                                 \
		if (rv_ != CKR_OK) {                                                \
			fprintf(stderr, "%s failed: 0x%08lX\n", what, (unsigned long)rv_); \
			return 1;                                                       \
		}                                                                   \
	} while (0)

static CK_FUNCTION_LIST_3_0 *f;

static void print_hex(const char *name, const CK_BYTE *bytes, CK_ULONG len)
{
	printf("%s: ", name);
	for (CK_ULONG i = 0; i < len; i++)
		printf("%02x", bytes[i]);
	printf("\n");
}

/* The one object matching tpl; 1 (with a message) when there is none or more than one. */
static int find_one(CK_SESSION_HANDLE s, const char *what, CK_ATTRIBUTE *tpl, CK_ULONG n,
		    CK_OBJECT_HANDLE *out)
{
	CK_OBJECT_HANDLE found[2];
	CK_ULONG count = 0;
	CHECK("C_FindObjectsInit", f->C_FindObjectsInit(s, tpl, n));
	CHECK("C_FindObjects", f->C_FindObjects(s, found, 2, &count));
	CHECK("C_FindObjectsFinal", f->C_FindObjectsFinal(s));
	if (count != 1) {
		fprintf(stderr, "%lu objects: %s\n", (unsigned long)count, what);
		return 1;
	}
	*out = found[0];
	return 0;
}

/* Reads one attribute into buf (cap bytes) and prints it as hex under name. */
static int print_attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
			   const char *name, CK_BYTE *buf, CK_ULONG cap, CK_ULONG *len)
{
	CK_ATTRIBUTE a = { type, buf, cap };
	CHECK(name, f->C_GetAttributeValue(s, o, &a, 1));
	*len = a.ulValueLen;
	print_hex(name, buf, a.ulValueLen);
	return 0;
}

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
	f = (CK_FUNCTION_LIST_3_0 *)iface->pFunctionList;

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

	CK_OBJECT_CLASS private_class = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE by_label[] = {
		{ CKA_CLASS, &private_class, sizeof private_class },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE key, public_key, certificate;
	if (find_one(s, "private key with the label", by_label, 2, &key))
		return 1;

	CK_BYTE id[64], point[128], public_point[128], der[4096];
	CK_ULONG id_len, point_len, public_point_len, der_len;
	if (print_attribute(s, key, CKA_ID, "key id", id, sizeof id, &id_len) ||
	    print_attribute(s, key, CKA_EC_POINT, "key point", point, sizeof point, &point_len))
		return 1;

	CK_OBJECT_CLASS public_class = CKO_PUBLIC_KEY, cert_class = CKO_CERTIFICATE;
	CK_ATTRIBUTE public_by_id[] = {
		{ CKA_CLASS, &public_class, sizeof public_class },
		{ CKA_ID, id, id_len },
	};
	CK_ATTRIBUTE cert_by_id[] = {
		{ CKA_CLASS, &cert_class, sizeof cert_class },
		{ CKA_ID, id, id_len },
	};
	if (find_one(s, "public key with the key's CKA_ID", public_by_id, 2, &public_key) ||
	    find_one(s, "certificate with the key's CKA_ID", cert_by_id, 2, &certificate))
		return 1;
	if (print_attribute(s, public_key, CKA_EC_POINT, "public key point", public_point,
			    sizeof public_point, &public_point_len) ||
	    print_attribute(s, certificate, CKA_VALUE, "certificate", der, sizeof der, &der_len))
		return 1;

	CK_MECHANISM mech = { CKM_ECDSA_SHA256, NULL, 0 };
	CK_BYTE sig[128];
	CK_ULONG sig_len = sizeof sig;
	CHECK("C_SignInit", f->C_SignInit(s, &mech, key));
	CHECK("C_Sign", f->C_Sign(s, (CK_BYTE *)message, strlen(message), sig, &sig_len));
	print_hex("signature", sig, sig_len);

	CHECK("C_CloseSession", f->C_CloseSession(s));
	CHECK("C_Finalize", f->C_Finalize(NULL));
	dlclose(lib);
	return 0;
}
