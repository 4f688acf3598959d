/*
 * The C ABI case of scripts/bench-first-signature.sh: load the module, C_Initialize, find the
 * private key by label, sign one message with CKM_ECDSA_SHA256, exit.
 *
 *   cc -O2 -Wall -Wextra -Werror -I include -o first_signature tests/c/first_signature.c -ldl
 *   ./first_signature MODULE LABEL MESSAGE_FILE SIGNATURE_OUT [--control SOCKET] [--repeat N]
 *                     [--exit-at-once]
 *
 * Writes the first signature to SIGNATURE_OUT as DER (ECDSA-Sig-Value, for `openssl dgst
 * -verify`) and prints `key=value` lines on stdout:
 *   start_to_signature_us  time from BENCH_START_US (µs since the epoch, set by the caller
 *                          just before it started this process) to the return of C_Sign
 *   card_total_before_sign card_total_after_sign  (with --control: the simulator's APDU
 *                          total, `stats`, read just before C_SignInit and just after C_Sign)
 *   repeat_signatures repeat_us  (with --repeat N: N more signatures in one session after the
 *                          first, and the time they took; with --control also
 *                          card_total_after_repeat)
 * With --exit-at-once the process `_exit`s right after writing the signature, without
 * C_CloseSession or C_Finalize (as one-shot tools and crashing programs end).
 * Exit 0 on success, 1 on any failure (the failing call and its CK_RV on stderr).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pkcs11.h"

#define CHECK(what, call)                                                      \
	do {                                                                       \
		CK_RV rv_ = (call);                                                    \
		if (rv_ != CKR_OK) {                                                   \
			fprintf(stderr, "%s failed: 0x%08lX\n", what, (unsigned long)rv_); \
			return 1;                                                          \
		}                                                                      \
	} while (0)

static long long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long long elapsed_us(struct timespec *from)
{
	struct timespec to;
	clock_gettime(CLOCK_MONOTONIC, &to);
	return (long long)(to.tv_sec - from->tv_sec) * 1000000 + (to.tv_nsec - from->tv_nsec) / 1000;
}

/* The simulator's APDU total ("total":N in the answer to `stats`), or -1. */
static long card_total(const char *control)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_un addr;
	memset(&addr, 0, sizeof addr);
	addr.sun_family = AF_UNIX;
	if (strlen(control) >= sizeof addr.sun_path) {
		close(fd);
		return -1;
	}
	strcpy(addr.sun_path, control);
	char answer[8192];
	size_t len = 0;
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || write(fd, "stats\n", 6) != 6) {
		close(fd);
		return -1;
	}
	while (len < sizeof answer - 1 && memchr(answer, '\n', len) == NULL) {
		ssize_t n = read(fd, answer + len, sizeof answer - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	answer[len] = '\0';
	const char *total = strstr(answer, "\"total\":");
	return total == NULL ? -1 : strtol(total + 8, NULL, 10);
}

/* One DER INTEGER of a big-endian unsigned number; returns the bytes written. */
static size_t der_integer(unsigned char *out, const unsigned char *n, size_t len)
{
	while (len > 1 && n[0] == 0) {
		n++;
		len--;
	}
	size_t pad = (n[0] & 0x80) ? 1 : 0;
	out[0] = 0x02;
	out[1] = (unsigned char)(len + pad);
	out[2] = 0x00;
	memcpy(out + 2 + pad, n, len);
	return 2 + pad + len;
}

/* r||s (as C_Sign returns it for ECDSA) as DER SEQUENCE { r INTEGER, s INTEGER }. */
static int write_der_signature(const char *path, const unsigned char *rs, size_t len)
{
	unsigned char der[3 + 2 * (3 + 66)];
	size_t half = len / 2, body = 0, head;
	if (len == 0 || len % 2 != 0 || half > 66)
		return -1;
	unsigned char integers[2 * (3 + 66)];
	body += der_integer(integers + body, rs, half);
	body += der_integer(integers + body, rs + half, half);
	der[0] = 0x30;
	if (body < 128) {
		der[1] = (unsigned char)body;
		head = 2;
	} else {
		der[1] = 0x81;
		der[2] = (unsigned char)body;
		head = 3;
	}
	memcpy(der + head, integers, body);
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		return -1;
	int written = fwrite(der, 1, head + body, f) == head + body;
	return (fclose(f) == 0 && written) ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr,
			"usage: %s MODULE LABEL MESSAGE_FILE SIGNATURE_OUT [--control SOCKET] [--repeat N] "
			"[--exit-at-once]\n",
			argv[0]);
		return 2;
	}
	const char *label = argv[2];
	const char *control = NULL;
	long repeat = 0;
	int exit_at_once = 0;
	for (int i = 5; i < argc; i++) {
		if (strcmp(argv[i], "--exit-at-once") == 0)
			exit_at_once = 1;
		else if (strcmp(argv[i], "--control") == 0 && i + 1 < argc)
			control = argv[++i];
		else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
			repeat = strtol(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}

	unsigned char message[4096];
	FILE *m = fopen(argv[3], "rb");
	if (m == NULL) {
		perror(argv[3]);
		return 1;
	}
	size_t message_len = fread(message, 1, sizeof message, m);
	fclose(m);

	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	CK_C_GetFunctionList get_function_list =
		(CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (get_function_list == NULL) {
		fprintf(stderr, "C_GetFunctionList not exported\n");
		return 1;
	}
	CK_FUNCTION_LIST *f = NULL;
	CHECK("C_GetFunctionList", get_function_list(&f));

	CK_C_INITIALIZE_ARGS args;
	memset(&args, 0, sizeof args);
	args.flags = CKF_OS_LOCKING_OK;
	CHECK("C_Initialize", f->C_Initialize(&args));

	CK_SLOT_ID slots[16];
	CK_ULONG slot_count = 16;
	CHECK("C_GetSlotList", f->C_GetSlotList(CK_TRUE, slots, &slot_count));
	if (slot_count == 0) {
		fprintf(stderr, "no slot with a token\n");
		return 1;
	}
	CK_SESSION_HANDLE s;
	CHECK("C_OpenSession", f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, NULL, NULL, &s));

	CK_OBJECT_CLASS key_class = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE template[] = {
		{ CKA_CLASS, &key_class, sizeof key_class },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE key;
	CK_ULONG found = 0;
	CHECK("C_FindObjectsInit", f->C_FindObjectsInit(s, template, 2));
	CHECK("C_FindObjects", f->C_FindObjects(s, &key, 1, &found));
	CHECK("C_FindObjectsFinal", f->C_FindObjectsFinal(s));
	if (found != 1) {
		fprintf(stderr, "no private key labelled %s\n", label);
		return 1;
	}

	long before = control ? card_total(control) : -1;
	CK_MECHANISM mechanism = { CKM_ECDSA_SHA256, NULL, 0 };
	CK_BYTE signature[132];
	CK_ULONG signature_len = sizeof signature;
	CHECK("C_SignInit", f->C_SignInit(s, &mechanism, key));
	CHECK("C_Sign", f->C_Sign(s, message, message_len, signature, &signature_len));
	long long signed_at = now_us();
	long after = control ? card_total(control) : -1;

	const char *start = getenv("BENCH_START_US");
	if (start != NULL)
		printf("start_to_signature_us=%lld\n", signed_at - strtoll(start, NULL, 10));
	if (control != NULL)
		printf("card_total_before_sign=%ld\ncard_total_after_sign=%ld\n", before, after);
	if (write_der_signature(argv[4], signature, signature_len) != 0) {
		fprintf(stderr, "cannot write %s (signature of %lu bytes)\n", argv[4],
			(unsigned long)signature_len);
		return 1;
	}

	if (exit_at_once) {
		fflush(stdout);
		_exit(0);
	}

	if (repeat > 0) {
		struct timespec from;
		clock_gettime(CLOCK_MONOTONIC, &from);
		for (long i = 0; i < repeat; i++) {
			CK_BYTE again[132];
			CK_ULONG again_len = sizeof again;
			CHECK("C_SignInit (repeat)", f->C_SignInit(s, &mechanism, key));
			CHECK("C_Sign (repeat)", f->C_Sign(s, message, message_len, again, &again_len));
		}
		long long took = elapsed_us(&from);
		printf("repeat_signatures=%ld\nrepeat_us=%lld\n", repeat, took);
		if (control != NULL)
			printf("card_total_after_repeat=%ld\n", card_total(control));
	}

	CHECK("C_CloseSession", f->C_CloseSession(s));
	CHECK("C_Finalize", f->C_Finalize(NULL));
	return 0;
}
