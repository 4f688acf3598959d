/* A libp11 consumer storing an enrolled certificate, as libp11-based clients (Anjay's HSM
 * engine, …) do: load the module, take the first slot with a token, open a read/write session,
 * PKCS11_store_certificate(token, x509, label, id), then list the token's certificates from a
 * fresh context (libp11 caches what it enumerated).
 *
 * Usage: store_certificate MODULE CERT.pem LABEL ID-HEX
 * Prints "before cert label=… id=… subject=…" for each certificate before the store, "stored
 * label=… id=…" for the certificate libp11 returns, "after cert …" for each one listed after it.
 * Exit 0 on success, 1 on any failure (with OpenSSL's error queue on stderr: libp11 puts the
 * CK_RV of a failed PKCS#11 call in the reason). */
#include <libp11.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what)
{
	unsigned long e;
	fprintf(stderr, "%s failed\n", what);
	while ((e = ERR_get_error()) != 0)
		fprintf(stderr, "  error 0x%lx: %s (reason 0x%x)\n", e,
			ERR_error_string(e, NULL), ERR_GET_REASON(e));
	return 1;
}

static void print_hex(const unsigned char *bytes, size_t len)
{
	for (size_t i = 0; i < len; i++)
		printf("%02x", bytes[i]);
}

static void print_cert(const char *prefix, const PKCS11_CERT *cert)
{
	char subject[256] = "";
	if (cert->x509)
		X509_NAME_oneline(X509_get_subject_name(cert->x509), subject,
				  sizeof subject);
	printf("%s label=%s id=", prefix, cert->label ? cert->label : "");
	print_hex(cert->id, cert->id_len);
	printf(" subject=%s\n", subject);
}

/* The module loaded in a new context and the first slot with a token. */
struct loaded {
	PKCS11_CTX *ctx;
	PKCS11_SLOT *slots;
	unsigned int nslots;
	PKCS11_SLOT *slot;
};

static int load(const char *module, struct loaded *l)
{
	memset(l, 0, sizeof *l);
	l->ctx = PKCS11_CTX_new();
	if (!l->ctx)
		return fail("PKCS11_CTX_new");
	if (PKCS11_CTX_load(l->ctx, module) != 0)
		return fail("PKCS11_CTX_load");
	if (PKCS11_enumerate_slots(l->ctx, &l->slots, &l->nslots) != 0)
		return fail("PKCS11_enumerate_slots");
	l->slot = PKCS11_find_token(l->ctx, l->slots, l->nslots);
	if (!l->slot || !l->slot->token)
		return fail("PKCS11_find_token");
	return 0;
}

static void unload(struct loaded *l)
{
	if (l->slots)
		PKCS11_release_all_slots(l->ctx, l->slots, l->nslots);
	if (l->ctx) {
		PKCS11_CTX_unload(l->ctx);
		PKCS11_CTX_free(l->ctx);
	}
	memset(l, 0, sizeof *l);
}

static int list_certs(PKCS11_TOKEN *token, const char *prefix)
{
	PKCS11_CERT *certs = NULL;
	unsigned int ncerts = 0;
	if (PKCS11_enumerate_certs(token, &certs, &ncerts) != 0)
		return fail("PKCS11_enumerate_certs");
	for (unsigned int i = 0; i < ncerts; i++)
		print_cert(prefix, &certs[i]);
	return 0;
}

static int read_certificate(const char *path, X509 **x509)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		return 1;
	}
	*x509 = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return *x509 ? 0 : fail("PEM_read_X509");
}

static int parse_id(const char *hex, unsigned char *id, size_t *id_len)
{
	size_t n = strlen(hex);
	if (n == 0 || n % 2 != 0 || n / 2 > *id_len) {
		fprintf(stderr, "bad ID %s\n", hex);
		return 1;
	}
	for (size_t i = 0; i < n / 2; i++) {
		unsigned int byte;
		if (sscanf(hex + 2 * i, "%2x", &byte) != 1) {
			fprintf(stderr, "bad ID %s\n", hex);
			return 1;
		}
		id[i] = (unsigned char)byte;
	}
	*id_len = n / 2;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s MODULE CERT.pem LABEL ID-HEX\n", argv[0]);
		return 2;
	}
	const char *module = argv[1];
	char *label = argv[3];
	unsigned char id[64];
	size_t id_len = sizeof id;
	X509 *x509 = NULL;
	if (parse_id(argv[4], id, &id_len) || read_certificate(argv[2], &x509))
		return 1;

	struct loaded l;
	int status = load(module, &l);
	if (status == 0)
		status = list_certs(l.slot->token, "before cert");
	if (status == 0 && PKCS11_open_session(l.slot, 1) != 0)
		status = fail("PKCS11_open_session(rw)");
	PKCS11_CERT *stored = NULL;
	if (status == 0 &&
	    PKCS11_store_certificate(l.slot->token, x509, label, id, id_len,
				     &stored) != 0)
		status = fail("PKCS11_store_certificate");
	if (status == 0)
		print_cert("stored", stored);
	unload(&l);

	if (status == 0) {
		status = load(module, &l);
		if (status == 0)
			status = list_certs(l.slot->token, "after cert");
		unload(&l);
	}
	X509_free(x509);
	return status;
}
