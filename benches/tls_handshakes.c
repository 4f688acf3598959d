/* Mutual-TLS handshakes per second with the client key on the card (issue #6 benchmark).
 * Full TLS 1.3 handshakes (no resumption) against `openssl s_server -Verify 1`, each with one
 * client signature (CertificateVerify) made by the card through pkcs11-provider; the key is
 * loaded once by its pkcs11: URI through OSSL_STORE (OPENSSL_CONF must load the provider).
 *   tls_handshakes PORT COUNT CERT.pem KEY-URI CA.pem
 * Prints: "handshakes=<n> seconds=<s> rate=<n/s>". Built and run by scripts/bench-tls.sh. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "tls_handshakes: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static EVP_PKEY *load_key(const char *uri) {
    OSSL_STORE_CTX *store = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL);
    if (store == NULL) die("OSSL_STORE_open of the key URI");
    OSSL_STORE_expect(store, OSSL_STORE_INFO_PKEY);
    EVP_PKEY *key = NULL;
    while (key == NULL && !OSSL_STORE_eof(store)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(store);
        if (info == NULL) continue;
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            key = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    if (key == NULL) die("no private key at the URI");
    return key;
}

static void handshake(SSL_CTX *ctx, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) die("SSL_connect");
    /* The server answers only after it has verified our certificate and signature. */
    const char req[] = "GET / HTTP/1.0\r\n\r\n";
    if (SSL_write(ssl, req, sizeof req - 1) <= 0) die("SSL_write");
    char buf[4096];
    int got = 0, n;
    while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) got += n;
    if (got == 0) die("no answer from the server");
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s PORT COUNT CERT.pem KEY-URI CA.pem\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), count = atoi(argv[2]);
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL);
    /* The key first, as openssl s_client does: an SSL_CTX made before pkcs11-provider's first
     * use picks the provider's signature implementations for verifying the server too, and
     * then fails ("Provided key has invalid handle"). */
    EVP_PKEY *key = load_key(argv[4]);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (SSL_CTX_use_certificate_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) die("client certificate");
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1) die("SSL_CTX_use_PrivateKey");
    if (SSL_CTX_load_verify_locations(ctx, argv[5], NULL) != 1) die("CA file");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    handshake(ctx, port); /* warm-up: sessions, object lookups */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < count; i++) handshake(ctx, port);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("handshakes=%d seconds=%.3f rate=%.2f\n", count, s, count / s);
    EVP_PKEY_free(key);
    SSL_CTX_free(ctx);
    return 0;
}
