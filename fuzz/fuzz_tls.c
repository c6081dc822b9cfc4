/* fuzz_tls.c: libFuzzer driver for the server's TLS input path (tls.c),
 * linked with tls.c itself: the server's contexts are made by wc_tls_new
 * from two certificates and keys this file writes once to a temporary
 * directory (the default one, and one for a.test and *.b.test given as
 * sni_certs), and every connection is a wc_tls_conn_t over one end of a
 * socketpair, driven by the same calls channel.c makes (wc_tls_handshake,
 * wc_tls_read, wc_tls_writev, wc_tls_close_notify, wc_tls_conn_free).
 * The first input byte picks the mode (its value modulo 4):
 *
 *   0  the rest is the client's bytes from the first one: the first-byte
 *      sniff (a letter: plain HTTP) and OpenSSL's parsing of a
 *      ClientHello (its server name too: the certificate's choice),
 *      alerts and whatever follows, then wc_tls_read until the stream
 *      ends.
 *   1  a real handshake first (an OpenSSL client in this process; TLS 1.2
 *      or 1.3 after the second byte's lowest bit, the name it sends after
 *      its other bits: sni_names; the certificate the client got and the
 *      name the server saw are checked), then the rest raw into the stream:
 *      record headers, lengths, ciphertext that fails its tag; the server
 *      reads until the stream ends.
 *   2  a real handshake, then the rest is a script for the client: pieces
 *      of plaintext of chosen sizes (up to 16 KiB, so records of every
 *      size), key updates, points where the server reads (into a buffer
 *      of a chosen size, exact so that ASan sees an overrun); at the end a
 *      close_notify.  What the server read must be exactly what the
 *      client wrote.
 *   3  a real handshake, then the rest shapes an iovec (pieces of chosen
 *      sizes, empty ones too) that the server writes with wc_tls_writev,
 *      resuming after partial writes as channel_out.c does; what the
 *      client reads must be the iovec's bytes in order.
 *
 * Not covered: what only the channel does (the handshake's timeout,
 * epoll readiness, the 400 answer to plain HTTP), client certificates
 * (ca_certs and cert_reqs are not set) and a context reload.  The
 * handshakes use fresh randomness, so a run is not exactly repeatable.
 *
 * `make fuzz` builds and runs it with the seeds in fuzz/corpus-tls. */
#include "loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* tls.c's WC_ASSERTs (channel.c has the server's). */
void
wc_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RECORD 16384
#define MAX_STEPS 64            /* handshake round trips, reads */

static wc_tls_t *server_tls;
static SSL_CTX *client_ctx[2];  /* TLS 1.2, TLS 1.3 */

/* ---- set-up, once ------------------------------------------------------- */

/* A P-256 key and a self-signed certificate for it, as PEM files in dir
 * named after `tag`; with `san`, a subjectAltName (the SNI certificate's
 * names). */
static int
write_identity(const char *dir, const char *tag, const char *san,
               char *certfile, char *keyfile, size_t len)
{
    int rv = -1;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    FILE *f = NULL;
    if (key == NULL || cert == NULL)
        goto error;
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_set_pubkey(cert, key);
    if (san) {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL,
                                                  NID_subject_alt_name,
                                                  san);
        int ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;
        X509_EXTENSION_free(ext);
        if (!ok)
            goto error;
    }
    if (X509_sign(cert, key, EVP_sha256()) <= 0)
        goto error;
    snprintf(certfile, len, "%s/%s-cert.pem", dir, tag);
    snprintf(keyfile, len, "%s/%s-key.pem", dir, tag);
    if ((f = fopen(certfile, "w")) == NULL || PEM_write_X509(f, cert) != 1)
        goto error;
    fclose(f);
    if ((f = fopen(keyfile, "w")) == NULL
        || PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) != 1)
        goto error;
    rv = 0;
error:
    if (f)
        fclose(f);
    X509_free(cert);
    EVP_PKEY_free(key);
    return rv;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/fuzz-tls-XXXXXX", certfile[256], keyfile[256];
    char sni_cert[256], sni_key[256];
    char err[512], warn[512];
    if (mkdtemp(dir) == NULL
        || write_identity(dir, "default", NULL, certfile, keyfile,
                          sizeof(certfile)) != 0
        || write_identity(dir, "sni", "DNS:a.test,DNS:*.b.test", sni_cert,
                          sni_key, sizeof(sni_cert)) != 0) {
        fprintf(stderr, "fuzz_tls: cannot write a certificate\n");
        abort();
    }
    const char *sni_certs[] = {sni_cert}, *sni_keys[] = {sni_key};
    /* A session cache, as by default: TLS 1.3 handshakes end with a
     * ticket, which the clients take in with the server's other bytes. */
    wc_tls_opts_t o = {.certfile = certfile, .keyfile = keyfile,
                       .min_version = 12, .session_cache = 64,
                       .session_timeout = 300, .sni_certfiles = sni_certs,
                       .sni_keyfiles = sni_keys, .n_sni = 1};
    int r = wc_tls_new(&server_tls, &o, err, sizeof(err), warn, sizeof(warn));
    unlink(certfile);
    unlink(keyfile);
    unlink(sni_cert);
    unlink(sni_key);
    rmdir(dir);
    if (r != 0) {
        fprintf(stderr, "fuzz_tls: wc_tls_new: %s\n", err);
        abort();
    }
    for (int i = 0; i < 2; i++) {
        client_ctx[i] = SSL_CTX_new(TLS_client_method());
        if (client_ctx[i] == NULL)
            abort();
        int v = i ? TLS1_3_VERSION : TLS1_2_VERSION;
        SSL_CTX_set_min_proto_version(client_ctx[i], v);
        SSL_CTX_set_max_proto_version(client_ctx[i], v);
        SSL_CTX_set_verify(client_ctx[i], SSL_VERIFY_NONE, NULL);
    }
    return 0;
}

/* ---- one connection ----------------------------------------------------- */

typedef struct {
    int fd[2];                  /* the server's end, the client's */
    wc_tls_conn_t *server;
    SSL *client;
    char *got;                  /* what the server read */
    size_t got_len, got_cap;
} conn_t;

static int
conn_open(conn_t *c)
{
    memset(c, 0, sizeof(*c));
    c->fd[0] = c->fd[1] = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, c->fd) != 0)
        return -1;
    c->server = wc_tls_conn_new(server_tls, c->fd[0]);
    return c->server ? 0 : -1;
}

static void
conn_close(conn_t *c)
{
    if (c->server) {
        wc_tls_close_notify(c->server);
        wc_tls_conn_free(c->server);
    }
    SSL_free(c->client);
    if (c->fd[0] >= 0)
        close(c->fd[0]);
    if (c->fd[1] >= 0)
        close(c->fd[1]);
    free(c->got);
    ERR_clear_error();
}

/* Everything the server sent to the client's end, thrown away (modes 0
 * and 1 have no client to read it). */
static void
drain(int fd)
{
    char buf[4096];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

static void
write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;     /* full: the rest is lost, like a peer's */
        p += w;
        n -= (size_t)w;
    }
}

/* The names a client of modes 1 to 3 sends (SNI), by the mode byte's
 * upper bits: none, the default certificate's, and the SNI
 * certificate's exactly, by wildcard, in capitals with a final dot, and
 * one label too deep for the wildcard. */
static const char *const sni_names[] = {
    NULL, "localhost", "a.test", "x.b.test", "A.TEST.", "x.y.b.test",
};
#define N_SNI_NAMES (sizeof(sni_names) / sizeof(sni_names[0]))

/* A real handshake between an OpenSSL client and the server, the client
 * sending the name `sni` (NULL: none): 0 when both sides finished. */
static int
handshake(conn_t *c, int tls13, const char *sni)
{
    c->client = SSL_new(client_ctx[tls13]);
    if (c->client == NULL || SSL_set_fd(c->client, c->fd[1]) != 1)
        return -1;
    if (sni != NULL && SSL_set_tlsext_host_name(c->client, sni) != 1)
        return -1;
    SSL_set_connect_state(c->client);
    int client_done = 0, server_done = 0;
    for (int i = 0; i < MAX_STEPS && !(client_done && server_done); i++) {
        if (!client_done) {
            int r = SSL_do_handshake(c->client);
            if (r == 1)
                client_done = 1;
            else if (SSL_get_error(c->client, r) != SSL_ERROR_WANT_READ)
                return -1;
        }
        if (!server_done) {
            int r = wc_tls_handshake(c->server);
            if (r == WC_TLS_DONE)
                server_done = 1;
            else if (r != WC_TLS_WANT_READ && r != WC_TLS_WANT_WRITE)
                abort();    /* a real client was refused */
        }
    }
    if (!(client_done && server_done))
        abort();
    wc_tls_info_t *info = wc_tls_info(c->server);
    if (info == NULL || info->protocol[0] == '\0')
        abort();
    /* The certificate of the name: the SNI one (the only one with a
     * subjectAltName) for its names, the default one for the others. */
    X509 *peer = SSL_get0_peer_certificate(c->client);
    int sni_cert = peer != NULL
                   && X509_get_ext_by_NID(peer, NID_subject_alt_name, -1) >= 0;
    int want_sni = sni != NULL && (strcmp(sni, "a.test") == 0
                                   || strcmp(sni, "x.b.test") == 0
                                   || strcmp(sni, "A.TEST.") == 0);
    if (peer == NULL || sni_cert != want_sni)
        abort();
    /* The name the client sent, as it sent it. */
    if ((sni == NULL) != (info->sni == NULL)
        || (sni != NULL && strcmp(sni, info->sni) != 0))
        abort();
    wc_tls_info_unref(info);
    ERR_clear_error();
    return 0;
}

/* One wc_tls_read into a buffer of exactly `size` bytes; the bytes are
 * kept.  Returns what wc_tls_read returned. */
static ssize_t
server_read(conn_t *c, size_t size)
{
    char *buf = malloc(size);
    if (buf == NULL)
        abort();
    /* Both ways of ending a read: by the size's lowest bit. */
    ssize_t n = wc_tls_read(c->server, buf, size, (int)(size & 1));
    if (n > (ssize_t)size)
        abort();
    if (n > 0) {
        if (c->got_len + (size_t)n > c->got_cap) {
            size_t cap = (c->got_len + (size_t)n) * 2;
            char *g = realloc(c->got, cap);
            if (g == NULL)
                abort();
            c->got = g;
            c->got_cap = cap;
        }
        memcpy(c->got + c->got_len, buf, (size_t)n);
        c->got_len += (size_t)n;
    }
    free(buf);
    return n;
}

/* What the loop does while epoll (level-triggered) says readable: reads
 * until a read brings nothing.  Each read that returns bytes takes at
 * least a record off the socket, so this ends; a fixed number of reads
 * would not do, since a buffer of one record takes one record a read and
 * a script can queue thousands of one-byte records.  Returns the last
 * read's result (0, -errno or WC_TLS_NEEDS_OUT). */
static ssize_t
server_read_ready(conn_t *c, size_t size)
{
    ssize_t n;
    while ((n = server_read(c, size)) > 0)
        ;
    return n;
}

/* Reads until the stream ends, fails or runs dry. */
static void
read_to_end(conn_t *c, size_t size)
{
    for (int i = 0; i < MAX_STEPS * 4; i++) {
        ssize_t n = server_read(c, size);
        if (n <= 0)
            return;
    }
}

/* The plaintext byte at offset i of what the client writes in mode 2. */
static char
pattern(size_t i)
{
    return (char)((i * 131u + (i >> 8)) & 0xff);
}

/* ---- the modes ---------------------------------------------------------- */

static void
mode_raw(conn_t *c, const uint8_t *data, size_t size)
{
    write_all(c->fd[1], data, size);
    shutdown(c->fd[1], SHUT_WR);
    int r = WC_TLS_WANT_READ;
    for (int i = 0; i < MAX_STEPS && r == WC_TLS_WANT_READ; i++) {
        r = wc_tls_handshake(c->server);
        if (r == WC_TLS_WANT_WRITE) {
            drain(c->fd[1]);
            r = WC_TLS_WANT_READ;
        }
    }
    if (r == WC_TLS_PLAIN && size > 0 && !((data[0] | 0x20) >= 'a'
                                            && (data[0] | 0x20) <= 'z'))
        abort();    /* plain HTTP only when the first byte is a letter */
    if (r == WC_TLS_DONE)
        read_to_end(c, RECORD);
}

static void
mode_inject(conn_t *c, const uint8_t *data, size_t size)
{
    if (size < 1
        || handshake(c, data[0] & 1, sni_names[(data[0] >> 1) % N_SNI_NAMES])
               != 0)
        return;
    drain(c->fd[1]);
    write_all(c->fd[1], data + 1, size - 1);
    shutdown(c->fd[1], SHUT_WR);
    read_to_end(c, RECORD);
}

static void
mode_script(conn_t *c, const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    int tls13 = data[0] & 1;
    /* The server's buffer: a record at least, as channel.c's is. */
    size_t bufsize = RECORD + (size_t)data[1] * 257;
    if (handshake(c, tls13, sni_names[(data[0] >> 1) % N_SNI_NAMES]) != 0)
        return;
    size_t sent = 0;
    char *piece = malloc(RECORD);
    if (piece == NULL)
        abort();
    for (size_t i = 2; i < size; i++) {
        uint8_t b = data[i];
        if (b == 0xff) {
            if (tls13 && SSL_key_update(c->client, SSL_KEY_UPDATE_REQUESTED) != 1)
                abort();
            /* Sent now, the server reading when the socket is full (a
             * key update pending would keep the client "in init"). */
            int r = SSL_do_handshake(c->client);
            for (int k = 0; r != 1 && k < MAX_STEPS; k++) {
                if (SSL_get_error(c->client, r) != SSL_ERROR_WANT_WRITE)
                    abort();
                server_read_ready(c, bufsize);
                drain(c->fd[1]);
                r = SSL_do_handshake(c->client);
            }
            if (r != 1)
                abort();
            continue;
        }
        if (b == 0xfe) {
            server_read(c, bufsize);
            continue;
        }
        size_t n = ((size_t)(b & 0x3f) + 1) * ((b & 0x40) ? 256 : 1);
        for (size_t k = 0; k < n; k++)
            piece[k] = pattern(sent + k);
        /* A full socket: the server reads, as epoll would have it, and the
         * same bytes are offered again. */
        int w = SSL_write(c->client, piece, (int)n);
        for (int k = 0; w <= 0 && k < MAX_STEPS; k++) {
            if (SSL_get_error(c->client, w) != SSL_ERROR_WANT_WRITE)
                abort();
            server_read_ready(c, bufsize);
            drain(c->fd[1]);
            w = SSL_write(c->client, piece, (int)n);
        }
        if (w <= 0)
            abort();
        sent += (size_t)w;
        drain(c->fd[1]);    /* the server's key updates */
    }
    free(piece);
    /* close_notify: the server reads everything, then the end. */
    int eof = 0;
    for (int i = 0; i < MAX_STEPS * 4 && !eof; i++) {
        if (SSL_shutdown(c->client) < 0)
            ERR_clear_error();  /* not sent yet: the socket is full */
        ssize_t n = server_read_ready(c, bufsize);
        if (n < 0 && n != -EAGAIN && n != WC_TLS_NEEDS_OUT)
            abort();    /* a well-formed stream failed */
        eof = n == 0;
        drain(c->fd[1]);
    }
    if (!eof || c->got_len != sent)
        abort();
    for (size_t k = 0; k < sent; k++)
        if (c->got[k] != pattern(k))
            abort();
}

static void
mode_write(conn_t *c, const uint8_t *data, size_t size)
{
    if (size < 1
        || handshake(c, data[0] & 1, sni_names[(data[0] >> 1) % N_SNI_NAMES])
               != 0)
        return;
    data++;
    size--;
    /* Each byte a piece: empty (0), small (1..127 bytes) or large (a
     * multiple of 1 KiB up to 32 KiB). */
    struct iovec iov[64];
    int n = 0;
    size_t total = 0;
    for (size_t i = 0; i < size && n < 64; i++) {
        uint8_t b = data[i];
        size_t len = b < 128 ? b : ((size_t)(b & 0x1f) + 1) * 1024;
        iov[n].iov_base = malloc(len ? len : 1);
        if (iov[n].iov_base == NULL)
            abort();
        for (size_t k = 0; k < len; k++)
            ((char *)iov[n].iov_base)[k] = pattern(total + k);
        iov[n].iov_len = len;
        total += len;
        n++;
    }
    char *got = malloc(total + 1);
    if (got == NULL)
        abort();
    size_t off = 0, read_back = 0;
    int first = 0;
    struct iovec rest[64];
    for (int step = 0; step < 4096 && (first < n || read_back < total);
         step++) {
        /* The pieces not yet taken, the first one advanced past what was
         * taken of it. */
        int m = 0;
        for (int j = first; j < n; j++)
            rest[m++] = iov[j];
        rest[0].iov_base = (char *)rest[0].iov_base + off;
        rest[0].iov_len -= off;
        ssize_t w = m > 0 ? wc_tls_writev(c->server, rest, m) : 0;
        if (w < 0 && w != -EAGAIN)
            abort();
        size_t adv = w > 0 ? (size_t)w : 0;
        while (first < n && adv >= iov[first].iov_len - off) {
            adv -= iov[first].iov_len - off;
            first++;
            off = 0;
        }
        off += adv;
        /* The client reads whatever is there. */
        for (;;) {
            int r = SSL_read(c->client, got + read_back,
                             (int)(total - read_back + 1));
            if (r <= 0)
                break;
            read_back += (size_t)r;
            if (read_back > total)
                abort();
        }
        ERR_clear_error();
    }
    if (first < n || read_back != total)
        abort();
    for (size_t k = 0; k < total; k++)
        if (got[k] != pattern(k))
            abort();
    free(got);
    for (int j = 0; j < n; j++)
        free(iov[j].iov_base);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    conn_t c;
    if (conn_open(&c) != 0) {
        conn_close(&c);
        return 0;
    }
    switch (data[0] & 3) {
    case 0:
        mode_raw(&c, data + 1, size - 1);
        break;
    case 1:
        mode_inject(&c, data + 1, size - 1);
        break;
    case 2:
        mode_script(&c, data + 1, size - 1);
        break;
    default:
        mode_write(&c, data + 1, size - 1);
        break;
    }
    conn_close(&c);
    return 0;
}
