/* tls.c: TLS in the core, with OpenSSL 3.  Owns everything of OpenSSL's:
 * the server's SSL_CTX, built from the settings when the server is
 * created (wc_tls_new: certificate chain, key and its password, client
 * certificate verification, versions, ciphers, ALPN), and per connection
 * an SSL object (wc_tls_conn_t): the handshake, reads, writes, the
 * close_notify of a clean close, and the facts the application sees in
 * its environ (wc_tls_info_t).  No other file includes an OpenSSL header.
 *
 * The SSL object works on the non-blocking socket itself (SSL_set_fd),
 * not on memory BIOs: its reads and writes are the socket's, so
 * SSL_ERROR_WANT_READ / WANT_WRITE are exactly "not readable / not
 * writable now", which the channel already waits for with epoll, and no
 * extra copy of the ciphertext is made.  Reads are ahead (read_ahead):
 * one read(2) takes what the socket has, up to READ_AHEAD bytes, rather
 * than a record's 5-byte header and then its body, two system calls a
 * request.  Whole records can then wait inside OpenSSL where epoll cannot
 * see them: wc_tls_has_pending tells the channel, which reads them
 * without waiting for the socket (channel.c: the ready list).  Memory
 * BIOs would only pay off for a write path that must not touch the
 * socket; a worker that writes a small response itself
 * (wc_tls_writev, from channel_out.c) does so through the same SSL
 * object, under the channel's lock, which the loop also takes around its
 * reads, writes and close_notify of that connection while a worker may
 * be at it.
 *
 * Choices, each for a reason:
 * - TLS 1.2 at least (1.3 with tls_min_version), its suites by default
 *   only ECDHE with AEAD (DEFAULT_CIPHERS); no renegotiation
 *   (SSL_OP_NO_RENEGOTIATION; TLS 1.3 has none), no compression.
 * - Session resumption from a cache in the process (session_cache
 *   sessions at most, each for session_timeout seconds; 0: none), never
 *   from tickets that carry the session: SSL_OP_NO_TICKET makes TLS 1.2
 *   resume by session ID and TLS 1.3 send stateful tickets, which only
 *   name a session of the cache.  So there is no ticket key to keep
 *   secret, rotate, or share between --workers processes (each has its
 *   own cache: a client that comes back to another one makes a full
 *   handshake), and a session is gone, with its secrets, when it leaves
 *   the cache.  A reload's new context has a new, empty cache: nothing
 *   verified under the old files (a client certificate under the old
 *   ca_certs) is resumed under the new ones.  TLS 1.3 resumption is
 *   psk_dhe_ke (OpenSSL's only mode unless told otherwise): a new key
 *   exchange each time; TLS 1.2's reuses the master secret.  No early
 *   data.  Three things OpenSSL would not do by itself: the timeout
 *   counts from the full handshake (on_ticket: a resumed session's new
 *   ticket keeps the first time), a session resumes only under its own certificate
 *   (a session ID context per context), and a cached session holds a
 *   small client chain only (on_new_session).
 * - SSL_OP_IGNORE_UNEXPECTED_EOF: a client that closes without
 *   close_notify is an ordinary end of stream; HTTP's own framing tells a
 *   cut-off request from a complete one.
 * - SSL_MODE_RELEASE_BUFFERS: an idle keep-alive connection does not
 *   keep 34 KiB of record buffers.
 * - ALPN: h2 (when http2 is on: preferred) or http/1.1 is chosen when
 *   offered; a client that offers only protocols we do not speak goes on
 *   without ALPN (no fatal alert).  The channel asks wc_tls_alpn_h2.
 * - A plain HTTP request on a TLS port (its first byte a letter rather
 *   than 0x16, a handshake record) is reported to the channel, which
 *   answers 400 in plain text, as nginx does, rather than hanging.
 * - Several certificates (sni_certs): each is a context of its own, chosen
 *   by the name the client sends (on_client_hello): the name exactly, else
 *   a wildcard one label up (RFC 6125: "*" is a whole first label and
 *   stands for one label), else certfile's.  The names come from the
 *   certificates themselves (subjectAltName's DNS entries; a subject's CN
 *   is not a name, as for browsers), sorted once for a binary search per
 *   handshake.  SSL_set_SSL_CTX does not move a connection to all of the
 *   new context: it takes the certificate, key and chain, and what
 *   OpenSSL reads through the connection's context later (the TLS 1.2
 *   suites, the verification store, the client CA list, the ALPN
 *   callback), while what SSL_new copied stays the first context's
 *   (verify mode, options, modes, versions, TLS 1.3 suites, read-ahead).
 *   So every context is built by the same ctx_new from the same settings,
 *   and per-name settings would need more than a context each.
 *
 * Reload (SIGHUP in a single process): a new context is built from the
 * files by the thread that asks (wc_tls_new) and handed to the loop
 * (server.c: wc_server_tls_swap), which uses it for the connections it
 * accepts from then on; a connection keeps the context it started with
 * (a reference each), so the old one goes with its last connection.
 *
 * A build without OpenSSL (WC_NO_TLS, setup.py: the manylinux_2_28
 * wheels, whose glibc is older than any OpenSSL 3 that could be bundled)
 * keeps only the stubs at the end of this file: wc_tls_new fails with a
 * message that says how to get TLS, so no context, and hence no TLS
 * connection, ever exists, and the other functions are never reached.
 * The rest of the core needs no #ifdef: it only sees these functions.
 *
 * GIL map: never touches Python.  wc_tls_new runs on the thread that
 * creates the server or asks for a reload (module.c releases the GIL
 * while it reads the files), wc_tls_free on that thread or the loop's
 * (the last connection's reference); wc_tls_writev on the loop or on a
 * worker (GIL held), under the channel's lock; everything else on the
 * loop thread.
 * OpenSSL's error queue is per thread: it is emptied before every call
 * that may fail (clear_errors).
 */
#include "loop.h"

#ifndef WC_NO_TLS

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/proverr.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* The largest TLS record's payload: output is written a record at a time
 * (small pieces coalesced into one). */
#define RECORD WC_TLS_RECORD
/* How much one read(2) may take from the socket (the read-ahead buffer,
 * allocated while it holds bytes: SSL_MODE_RELEASE_BUFFERS): as much as
 * the channel's read round takes, so that an upload costs a system call
 * per 64 KiB rather than per record. */
#define READ_AHEAD WC_READ_SIZE

/* TLS 1.2's suites when the ciphers setting is not given: ECDHE key
 * exchange (forward secrecy) and AEAD ciphers only.  OpenSSL's own default
 * list also has the CBC suites (with SHA-1 and SHA-2 MACs), which a scan
 * rightly reports as weak (tests/test_tls_scan.py). */
#define DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"

/* A name a certificate serves: one of its subjectAltName's DNS names, in
 * lower case and without a final dot ("*.example.com" for a wildcard),
 * and the context that has it (0: ctx, certfile's; i: sni[i - 1]). */
typedef struct {
    char *name;
    int ctx;
} sni_name_t;

struct wc_tls_s {
    atomic_int refs;            /* the server's, and each connection's */
    SSL_CTX *ctx;               /* certfile's: what every connection starts
                                   with, and the default */
    SSL_CTX **sni;              /* sni_certs', in their order */
    int n_sni;
    sni_name_t *names;          /* every context's, sorted by name, each
                                   name once (its first certificate's);
                                   none without sni_certs */
    size_t n_names;
    BIO_METHOD *wmeth;          /* the connections' write BIO (bio_send) */
};

struct wc_tls_conn_s {
    SSL *ssl;
    wc_tls_t *t;
    wc_tls_info_t *info;        /* after the handshake */
    int fd;
    int wmore;                  /* under the channel's lock: more bytes
                                   follow the record being written */
    unsigned sniffed : 1;       /* the first byte was looked at */
    unsigned more : 1;          /* the last read stopped with records
                                   still inside OpenSSL (read ahead) */
    int sni_ctx;                /* the context its name chose (0:
                                   certfile's), -1: none (on_client_hello) */
    char sni[256];              /* the name the client sent, when a host
                                   name; "" otherwise */
};

static int on_password(char *buf, int size, int rwflag, void *u);
static int on_alpn(SSL *ssl, const unsigned char **out,
                   unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg);

/* ---- the server's context ------------------------------------------------ */

/* The connections' write BIO.  OpenSSL's socket BIO writes with write(2),
 * which raises SIGPIPE on a connection the client has reset: the loop
 * thread blocks that signal (server.c), but a worker that writes a small
 * response itself (channel_out.c), or an app thread in write(), does not,
 * and a process whose SIGPIPE is at its default would be killed by a
 * client that goes away.  So records leave with send(2) and MSG_NOSIGNAL,
 * as every other write of the server; reads keep the socket BIO.
 *
 * A record with more of the same write behind it (wc_tls_writev sets
 * c->wmore) also goes with MSG_MORE: the kernel then builds full-sized
 * segments from the 16 KiB records instead of pushing each one alone
 * (a 1 MiB body over loopback: 64 segments fewer); the last record of a
 * write goes without it, so nothing waits. */
static int
bio_send(BIO *b, const char *p, int n)
{
    wc_tls_conn_t *c = BIO_get_data(b);
    int flags = MSG_NOSIGNAL | (c->wmore ? MSG_MORE : 0);
    ssize_t w;
    BIO_clear_retry_flags(b);
    do {
        w = send(c->fd, p, (size_t)n, flags);
    } while (w < 0 && errno == EINTR);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(b);
    return (int)w;     /* errno stays the socket's, for failure() */
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;       /* nothing is buffered here */
    case BIO_C_GET_FD: {
        /* SSL_get_wfd: the socket, as the socket BIO would answer. */
        int fd = ((wc_tls_conn_t *)BIO_get_data(b))->fd;
        if (ptr != NULL)
            *(int *)ptr = fd;
        return fd;
    }
    default:
        return 0;       /* no pending bytes, no kTLS, nothing else */
    }
}

/* The key's password, from the settings; NULL: fail rather than ask on a
 * terminal (OpenSSL's default). */
static int
on_password(char *buf, int size, int rwflag, void *u)
{
    const char *pw = u;
    if (pw == NULL)
        return 0;
    size_t n = strlen(pw);
    if (n > (size_t)size)
        return 0;
    memcpy(buf, pw, n);
    return (int)n;
}

static int
on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
        const unsigned char *in, unsigned int inlen, void *arg)
{
    /* Ours first: SSL_select_next_proto takes the first of them that the
     * client offers. */
    static const unsigned char h1[] = "\x08http/1.1";
    static const unsigned char h2[] = "\x02h2\x08http/1.1";
    const unsigned char *ours = arg ? h2 : h1;
    unsigned int olen = arg ? sizeof(h2) - 1 : sizeof(h1) - 1;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, olen, in, inlen)
        != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* OpenSSL's reason for the last failure, for a one-line message. */
static const char *
reason(void)
{
    const char *r = ERR_reason_error_string(ERR_peek_last_error());
    return r ? r : "unknown error";
}

static int
is_bad_password(unsigned long e)
{
    int r = ERR_GET_REASON(e);
    return (ERR_GET_LIB(e) == ERR_LIB_PEM
            && (r == PEM_R_BAD_DECRYPT || r == PEM_R_BAD_PASSWORD_READ
                || r == PEM_R_PROBLEMS_GETTING_PASSWORD))
           || (ERR_GET_LIB(e) == ERR_LIB_EVP && r == EVP_R_BAD_DECRYPT)
           || (ERR_GET_LIB(e) == ERR_LIB_PROV && r == PROV_R_BAD_DECRYPT);
}

/* Does the PEM file at `path` hold an encrypted private key?  OpenSSL's
 * errors cannot say so reliably: a key decrypted with a wrong (or no)
 * password is garbage whose padding still looks right once in about 256
 * tries, and then only "unsupported" is reported.  So the file's own
 * markers are looked for (PKCS#8's header, or the traditional format's
 * Proc-Type line). */
static int
pem_is_encrypted(const char *path)
{
    static const char *const marks[] = {
        "-----BEGIN ENCRYPTED PRIVATE KEY-----",
        "Proc-Type: 4,ENCRYPTED",
    };
    char buf[65536];
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++)
        if (memmem(buf, n, marks[i], strlen(marks[i])) != NULL)
            return 1;
    return 0;
}

/* One more warning, after those already in warn ("; " between). */
static void
add_warning(char *warn, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
add_warning(char *warn, size_t len, const char *fmt, ...)
{
    size_t at = strlen(warn);
    if (at > 0 && at + 3 < len) {
        memcpy(warn + at, "; ", 3);
        at += 2;
    }
    if (at + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(warn + at, len - at, fmt, ap);
    va_end(ap);
}

/* A context with every setting, for the certificate chain in certfile
 * and the key in keyfile, which messages call `cert_what` and `key_what`
 * ("certfile" and "keyfile", or sni_certs' words); `index` is its place
 * (0: certfile's, i: sni[i - 1]).  NULL, with a one-line reason in err,
 * when it cannot be made. */
static SSL_CTX *
ctx_new(const wc_tls_opts_t *o, int index, const char *certfile,
        const char *keyfile, const char *cert_what, const char *key_what,
        char *err, size_t errlen)
{
    ERR_clear_error();  /* the key's errors are read from the whole queue */
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    STACK_OF(X509_NAME) *cas = NULL;
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a TLS context: %s", reason());
        goto error;
    }
    SSL_CTX_set_min_proto_version(ctx, o->min_version == 13 ? TLS1_3_VERSION
                                                            : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION
                                 | SSL_OP_NO_TICKET
                                 | SSL_OP_CIPHER_SERVER_PREFERENCE
                                 | SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (o->session_cache > 0) {
        /* Only the first context's cache is used (the connection's
         * session context stays that one when SNI moves it). */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_sess_set_cache_size(ctx, o->session_cache);
        SSL_CTX_set_timeout(ctx, o->session_timeout);
        SSL_CTX_set_num_tickets(ctx, 1);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    /* Each context its own: a session is resumed only under the
     * certificate it was made with (a client that asks for another name
     * makes a full handshake, as RFC 6066 wants), and OpenSSL refuses to
     * resume one with a verified client certificate without one.
     * SSL_set_SSL_CTX carries it over, the switch being made before the
     * session is looked up (on_client_hello). */
    char sid[32];
    int sid_len = snprintf(sid, sizeof(sid), "waitress_c:%d", index);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)sid,
                                   (unsigned)sid_len);
    /* A client's certificate chain: 16 KiB at most (OpenSSL's bound is
     * 100 KiB), more than any real one; on_new_session bounds what a
     * session keeps of it. */
    if (o->ca_certs)
        SSL_CTX_set_max_cert_list(ctx, 16384);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                              | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                              | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, READ_AHEAD);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, o->h2 ? (void *)ctx : NULL);
    const char *ciphers = o->ciphers && o->ciphers[0] ? o->ciphers
                                                      : DEFAULT_CIPHERS;
    if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
        snprintf(err, errlen, "ciphers %s: no usable cipher suite (%s)",
                 ciphers, reason());
        goto error;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1) {
        snprintf(err, errlen, "%s %s: cannot load a certificate (%s)",
                 cert_what, certfile, reason());
        goto error;
    }
    SSL_CTX_set_default_passwd_cb(ctx, on_password);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, (void *)o->password);
    int ok = SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM);
    /* The password is not kept: the callback's data was the caller's. */
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    if (ok != 1) {
        const char *why = reason();
        /* The telling error is anywhere in the queue (the last one is
         * "PEM lib"). */
        unsigned long e, bad = 0, mismatch = 0;
        while ((e = ERR_get_error()) != 0) {
            bad |= is_bad_password(e);
            mismatch |= ERR_GET_LIB(e) == ERR_LIB_X509
                        && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
        }
        bad |= pem_is_encrypted(keyfile);
        if (mismatch)
            snprintf(err, errlen, "%s %s does not match %s %s", key_what,
                     keyfile, cert_what, certfile);
        else if (bad && o->password)
            snprintf(err, errlen, "%s %s: wrong password", key_what,
                     keyfile);
        else if (bad)
            snprintf(err, errlen, "%s %s is encrypted: give its "
                     "password with keyfile_password_file or "
                     "keyfile_password_env", key_what, keyfile);
        else
            snprintf(err, errlen, "%s %s: cannot load a private key "
                     "(%s)", key_what, keyfile, why);
        goto error;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "%s %s does not match %s %s", key_what,
                 keyfile, cert_what, certfile);
        goto error;
    }
    if (o->ca_certs) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca_certs, NULL) != 1) {
            snprintf(err, errlen, "ca_certs %s: cannot load CA certificates "
                     "(%s)", o->ca_certs, reason());
            goto error;
        }
        /* The CAs whose certificates the client is asked for. */
        cas = SSL_load_client_CA_file(o->ca_certs);
        if (cas == NULL) {
            snprintf(err, errlen, "ca_certs %s: no CA certificate in it",
                     o->ca_certs);
            goto error;
        }
        SSL_CTX_set_client_CA_list(ctx, cas);  /* takes it */
        cas = NULL;
    }
    if (o->cert_reqs != WC_TLS_VERIFY_NONE) {
        if (o->ca_certs == NULL) {
            snprintf(err, errlen, "cert_reqs needs ca_certs: the CAs that "
                     "sign the client certificates");
            goto error;
        }
        int mode = SSL_VERIFY_PEER;
        if (o->cert_reqs == WC_TLS_VERIFY_REQUIRED)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
    }
    return ctx;

error:
    if (cas)
        sk_X509_NAME_pop_free(cas, X509_NAME_free);
    SSL_CTX_free(ctx);
    return NULL;
}

/* An expired certificate, or one not valid yet, is a warning: the server
 * starts (a renewal may be on its way), and says so. */
static void
check_dates(SSL_CTX *ctx, const char *what, const char *certfile,
            char *warn, size_t warnlen)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (cert && X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
        add_warning(warn, warnlen, "%s %s: the certificate has expired",
                    what, certfile);
    else if (cert && X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0)
        add_warning(warn, warnlen, "%s %s: the certificate is not valid "
                    "yet", what, certfile);
}

/* ---- choosing a certificate by name (SNI) ---------------------------------- */

static int
ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Is p[0..len) a host name (its final dot taken off): labels of 1 to 63
 * letters, digits, '-' and '_' (seen in real names), 253 bytes at most?
 * What a client sends as its server name is only looked up, and only
 * shown to the application, when it is one. */
static int
host_name_ok(const char *p, size_t len)
{
    if (len == 0 || len > 253)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '.') {
            if (label == 0)
                return 0;   /* an empty label */
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                   || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return label > 0;
}

/* The length of a sent or certified name without its final dot. */
static size_t
without_final_dot(const char *p, size_t len)
{
    return len > 0 && p[len - 1] == '.' ? len - 1 : len;
}

/* Adds one of a certificate's DNS names for context `ctx`, in the form
 * sni_name_t keeps.  A name no client could ask for is left out: one
 * that is not a host name, except for a wildcard, "*." and a host name
 * of two labels at least ("*.com" would be refused by clients).
 * Returns 1 when added, 0 when left out, -1 when out of memory. */
static int
names_add(wc_tls_t *t, size_t *cap, const char *p, size_t len, int ctx)
{
    len = without_final_dot(p, len);
    if (len >= 2 && p[0] == '*' && p[1] == '.') {
        if (!host_name_ok(p + 2, len - 2) || !memchr(p + 2, '.', len - 2))
            return 0;
    } else if (!host_name_ok(p, len)) {
        return 0;
    }
    if (t->n_names == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        sni_name_t *n = realloc(t->names, ncap * sizeof(*n));
        if (n == NULL)
            return -1;
        t->names = n;
        *cap = ncap;
    }
    char *name = malloc((size_t)len + 1);
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < len; i++)
        name[i] = (char)ascii_lower((unsigned char)p[i]);
    name[len] = '\0';
    t->names[t->n_names].name = name;
    t->names[t->n_names].ctx = ctx;
    t->n_names++;
    return 1;
}

/* Adds the DNS names of ctx's certificate.  Returns how many, or -1 when
 * out of memory. */
static int
cert_names(wc_tls_t *t, size_t *cap, SSL_CTX *ctx, int index)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    GENERAL_NAMES *gens = cert ? X509_get_ext_d2i(cert, NID_subject_alt_name,
                                                  NULL, NULL)
                               : NULL;
    size_t before = t->n_names;
    int rv = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        int n = ASN1_STRING_length(g->d.dNSName);
        if (names_add(t, cap,
                      (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                      n > 0 ? (size_t)n : 0, index) < 0) {
            rv = -1;
            break;
        }
    }
    GENERAL_NAMES_free(gens);
    return rv < 0 ? -1 : (int)(t->n_names - before);
}

/* By name, then by context: the first certificate's comes first. */
static int
name_order(const void *a, const void *b)
{
    const sni_name_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->ctx > y->ctx) - (x->ctx < y->ctx);
}

static int
name_cmp(const void *a, const void *b)
{
    return strcmp(((const sni_name_t *)a)->name,
                  ((const sni_name_t *)b)->name);
}

static int
names_find(const wc_tls_t *t, char *name)
{
    if (t->n_names == 0)
        return -1;      /* bsearch's array may not be NULL */
    sni_name_t key = {.name = name, .ctx = 0};
    const sni_name_t *hit = bsearch(&key, t->names, t->n_names,
                                    sizeof(*t->names), name_cmp);
    return hit ? hit->ctx : -1;
}

/* The context for the name a client sent, a host name (sent_name
 * checked it: so no '*', which could match a wildcard entry itself):
 * the name itself, else the wildcard one label up, else -1 (certfile's,
 * as for no name). */
static int
sni_lookup(const wc_tls_t *t, const char *sent)
{
    if (t->n_names == 0)
        return -1;      /* no sni_certs: nothing to choose from */
    char buf[256];
    size_t n = without_final_dot(sent, strlen(sent));
    WC_ASSERT(host_name_ok(sent, n));
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)ascii_lower((unsigned char)sent[i]);
    buf[n] = '\0';
    int hit = names_find(t, buf);
    if (hit >= 0)
        return hit;
    char *dot = memchr(buf, '.', n);
    if (dot == NULL || dot == buf)
        return -1;      /* one label, or an empty first one */
    size_t rest = n - (size_t)(dot - buf);      /* from the dot, no NUL */
    memmove(buf + 1, dot, rest + 1);
    buf[0] = '*';
    return names_find(t, buf);
}

/* The host name in a ClientHello's server_name extension (RFC 6066: a
 * list of (type, name), host_name being type 0), copied to out (256
 * bytes) when it is one (host_name_ok); "" otherwise. */
static void
sent_name(const unsigned char *p, size_t len, char *out)
{
    out[0] = '\0';
    if (len < 2 || (size_t)((p[0] << 8) | p[1]) != len - 2)
        return;
    for (size_t at = 2; at + 3 <= len;) {
        size_t n = (size_t)((p[at + 1] << 8) | p[at + 2]);
        if (at + 3 + n > len)
            return;
        if (p[at] == 0) {
            const char *name = (const char *)p + at + 3;
            if (n < 256 && host_name_ok(name, without_final_dot(name, n))) {
                memcpy(out, name, n);
                out[n] = '\0';
            }
            return;
        }
        at += 3 + n;
    }
}

/* OpenSSL's ClientHello callback, before anything else of the
 * ClientHello is acted on (the session to resume is looked up after
 * it): notes the name the client sent and moves the connection to the
 * context of that name, certfile's when no certificate has it (always
 * set: after a TLS 1.3 HelloRetryRequest it runs again, for a second
 * ClientHello whose name may differ, from the context the first one
 * chose).  The name is taken from the
 * ClientHello itself because OpenSSL's SSL_get_servername gives, on a
 * TLS 1.2 resumption, the name of the session's first handshake. */
static int
on_client_hello(SSL *ssl, int *alert, void *arg)
{
    const wc_tls_t *t = arg;
    wc_tls_conn_t *c = SSL_get_app_data(ssl);
    const unsigned char *p;
    size_t len;
    c->sni[0] = '\0';
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len))
        sent_name(p, len, c->sni);
    c->sni_ctx = c->sni[0] ? sni_lookup(t, c->sni) : -1;
    int i = c->sni_ctx;
    if (SSL_set_SSL_CTX(ssl, i > 0 ? t->sni[i - 1] : t->ctx) == NULL) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* OpenSSL's servername callback, once the ClientHello's extensions are
 * read: acknowledges a name that chose a certificate. */
static int
on_servername(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    (void)arg;
    const wc_tls_conn_t *c = SSL_get_app_data(ssl);
    return c->sni_ctx >= 0 ? SSL_TLSEXT_ERR_OK : SSL_TLSEXT_ERR_NOACK;
}

/* A session's time: OpenSSL 3.3 has time_t versions (the long ones are
 * deprecated from 3.4: not Y2038-safe); 3.0 has only the long ones. */
#if OPENSSL_VERSION_NUMBER >= 0x30300000L
#define session_get_time(s) SSL_SESSION_get_time_ex(s)
#define session_set_time(s, t) SSL_SESSION_set_time_ex((s), (t))
#else
#define session_get_time(s) ((time_t)SSL_SESSION_get_time(s))
#define session_set_time(s, t) SSL_SESSION_set_time((s), (long)(t))
#endif

/* OpenSSL's callback as it makes a TLS 1.3 ticket, for a full handshake
 * or a resumption (clients use a ticket once, as RFC 8446 asks, so each
 * resumption needs a new one).  For a resumption OpenSSL caches a copy
 * of the session with its time set to now: a client that kept coming
 * back would keep its session, and a client certificate verified in it
 * (expired since), for ever.  So the full handshake's time goes with the
 * session (its ticket appdata, which the copy keeps) and is put back:
 * session_timeout counts from the full handshake (to the second: a
 * renewed session may end up to a second early, never late). */
static int
on_ticket(SSL *ssl, void *arg)
{
    (void)arg;
    SSL_SESSION *sess = SSL_get_session(ssl);
    void *data;
    size_t len;
    time_t first;
    if (sess == NULL)
        return 0;
    if (SSL_SESSION_get0_ticket_appdata(sess, &data, &len) == 1
        && len == sizeof(first)) {
        memcpy(&first, data, sizeof(first));
        return session_set_time(sess, first) != 0;
    }
    first = session_get_time(sess);
    return SSL_SESSION_set1_ticket_appdata(sess, &first, sizeof(first));
}

/* What a cached session may hold of a client's certificate chain: the
 * session keeps every certificate the client sent, each parsed (about
 * 5 KiB of memory a certificate, more for large ones: 177 KiB for a chain
 * of 16 KiB), so a holder of a valid client certificate who padded its
 * chain could fill the cache with heavy sessions.  Real chains (the
 * client's certificate and an intermediate or two) fit. */
#define SESSION_CHAIN_CERTS 4
#define SESSION_CHAIN_BYTES 8192

/* OpenSSL's new-session callback, just after a session went into the
 * cache: one whose client sent a longer chain than the bounds above is
 * taken out again (the connection goes on; the client will make a full
 * handshake next time), so that a cached session stays small. */
static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    const wc_tls_conn_t *c = SSL_get_app_data(ssl);
    X509 *leaf = SSL_get0_peer_certificate(ssl);
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    int n = chain ? sk_X509_num(chain) : 0, certs = n;
    size_t bytes = 0;
    for (int i = 0; i < n && bytes <= SESSION_CHAIN_BYTES; i++) {
        int len = i2d_X509(sk_X509_value(chain, i), NULL);
        bytes += len > 0 ? (size_t)len : 0;
    }
    /* A server's view of the chain leaves the client's own certificate
     * out (OpenSSL's documentation); counted either way. */
    if (leaf && (n == 0 || X509_cmp(sk_X509_value(chain, 0), leaf) != 0)) {
        int len = i2d_X509(leaf, NULL);
        bytes += len > 0 ? (size_t)len : 0;
        certs++;
    }
    if (certs > SESSION_CHAIN_CERTS || bytes > SESSION_CHAIN_BYTES)
        SSL_CTX_remove_session(c->t->ctx, sess);
    return 0;   /* no reference kept */
}

/* The names of every context, sorted, each once; a certificate of
 * sni_certs that no name leads to is a warning.  Returns 0, or -1 when
 * out of memory. */
static int
sni_build(wc_tls_t *t, const wc_tls_opts_t *o, char *warn, size_t warnlen)
{
    size_t cap = 0;
    int rv = -1;
    int *had = calloc((size_t)t->n_sni + 1, sizeof(int));
    if (had == NULL)
        return -1;
    for (int i = 0; i <= t->n_sni; i++) {
        had[i] = cert_names(t, &cap, i ? t->sni[i - 1] : t->ctx, i);
        if (had[i] < 0)
            goto done;
    }
    if (t->n_names > 0)     /* qsort's array may not be NULL */
        qsort(t->names, t->n_names, sizeof(*t->names), name_order);
    size_t kept = 0;
    for (size_t i = 0; i < t->n_names; i++) {
        if (kept > 0
            && strcmp(t->names[kept - 1].name, t->names[i].name) == 0) {
            free(t->names[i].name);     /* an earlier certificate's */
            continue;
        }
        t->names[kept++] = t->names[i];
    }
    t->n_names = kept;
    for (int i = 1; i <= t->n_sni; i++) {
        int chosen = 0;
        for (size_t j = 0; j < t->n_names && !chosen; j++)
            chosen = t->names[j].ctx == i;
        if (had[i] == 0)
            add_warning(warn, warnlen, "sni_certs %s: no DNS name a client "
                        "could ask for in its subjectAltName, so no client "
                        "is ever served it",
                        o->sni_certfiles[i - 1]);
        else if (!chosen)
            add_warning(warn, warnlen, "sni_certs %s: each of its names is "
                        "an earlier certificate's, so no client is ever "
                        "served it", o->sni_certfiles[i - 1]);
    }
    rv = 0;
done:
    free(had);
    return rv;
}

int
wc_tls_new(wc_tls_t **out, const wc_tls_opts_t *o, char *err, size_t errlen,
           char *warn, size_t warnlen)
{
    int rv = -1;
    wc_tls_t *t = NULL;

    *out = NULL;
    err[0] = '\0';
    warn[0] = '\0';
    ERR_clear_error();
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "cannot create a TLS context: out of memory");
        goto done;
    }
    atomic_init(&t->refs, 1);
    t->ctx = ctx_new(o, 0, o->certfile, o->keyfile, "certfile", "keyfile",
                     err, errlen);
    if (t->ctx == NULL)
        goto done;
    check_dates(t->ctx, "certfile", o->certfile, warn, warnlen);
    if (o->n_sni > 0) {
        t->sni = calloc((size_t)o->n_sni, sizeof(*t->sni));
        if (t->sni == NULL) {
            snprintf(err, errlen, "cannot create a TLS context: out of "
                     "memory");
            goto done;
        }
        for (int i = 0; i < o->n_sni; i++) {
            t->sni[i] = ctx_new(o, i + 1, o->sni_certfiles[i],
                                o->sni_keyfiles[i], "sni_certs",
                                "sni_certs key", err, errlen);
            if (t->sni[i] == NULL)
                goto done;
            t->n_sni++;
            check_dates(t->sni[i], "sni_certs", o->sni_certfiles[i], warn,
                        warnlen);
        }
        if (sni_build(t, o, warn, warnlen) < 0) {
            snprintf(err, errlen, "cannot create a TLS context: out of "
                     "memory");
            goto done;
        }
    }
    /* Always, sni_certs or not: they also keep the name for the
     * environ.  On every context: OpenSSL
     * asks the connection's current one, which after a HelloRetryRequest
     * may be the one the first ClientHello chose.  Sessions are the first
     * context's (the session context stays that one). */
    for (int i = 0; i <= t->n_sni; i++) {
        SSL_CTX *ctx = i ? t->sni[i - 1] : t->ctx;
        SSL_CTX_set_client_hello_cb(ctx, on_client_hello, t);
        SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    }
    SSL_CTX_sess_set_new_cb(t->ctx, on_new_session);
    SSL_CTX_set_session_ticket_cb(t->ctx, on_ticket, NULL, NULL);
    /* A plain source/sink type, not BIO_get_new_index(): that allots one
     * of about a hundred numbers a process has, and every reload makes a
     * context. */
    t->wmeth = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "waitress_c send");
    if (t->wmeth == NULL || BIO_meth_set_write(t->wmeth, bio_send) != 1
        || BIO_meth_set_ctrl(t->wmeth, bio_ctrl) != 1) {
        snprintf(err, errlen, "cannot create a TLS context: %s", reason());
        goto done;
    }
    *out = t;
    t = NULL;
    rv = 0;

done:
    ERR_clear_error();
    wc_tls_free(t);     /* what was made of it; its only reference */
    return rv;
}

/* Drop a reference: the server's (at its end, or when a reload replaces
 * the context) or a connection's; the last one frees. */
void
wc_tls_free(wc_tls_t *t)
{
    if (t == NULL || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    SSL_CTX_free(t->ctx);
    for (int i = 0; i < t->n_sni; i++)
        SSL_CTX_free(t->sni[i]);
    free(t->sni);
    for (size_t i = 0; i < t->n_names; i++)
        free(t->names[i].name);
    free(t->names);
    BIO_meth_free(t->wmeth);    /* no connection's BIO is left */
    free(t);
}

/* ---- a connection -------------------------------------------------------- */

wc_tls_conn_t *
wc_tls_conn_new(wc_tls_t *t, int fd)
{
    wc_tls_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    ERR_clear_error();
    c->ssl = SSL_new(t->ctx);
    /* Reads through OpenSSL's socket BIO; writes through bio_send. */
    BIO *rb = BIO_new_socket(fd, BIO_NOCLOSE);
    BIO *wb = BIO_new(t->wmeth);
    if (c->ssl == NULL || rb == NULL || wb == NULL) {
        ERR_clear_error();
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    c->fd = fd;
    c->sni_ctx = -1;
    SSL_set_app_data(c->ssl, c);    /* for on_client_hello, on_servername */
    BIO_set_data(wb, c);
    BIO_set_init(wb, 1);
    SSL_set_bio(c->ssl, rb, wb);    /* the SSL object owns both now */
    SSL_set_accept_state(c->ssl);
    atomic_fetch_add(&t->refs, 1);     /* a reload may replace it */
    c->t = t;
    return c;
}

void
wc_tls_conn_free(wc_tls_conn_t *c)
{
    if (c == NULL)
        return;
    wc_tls_info_unref(c->info);
    /* A session whose connection ends without our close_notify (the
     * client closed first, a timeout, a stop) stays in the cache:
     * OpenSSL would drop it at SSL_free, as it would one whose
     * connection failed, and clients that close their idle connections
     * (most) would never resume.  A failure with a fatal alert has
     * dropped it already. */
    if (c->ssl != NULL && SSL_is_init_finished(c->ssl))
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);   /* the socket is the channel's: not closed here */
    wc_tls_free(c->t);
    free(c);
}

/* A memory BIO's text as a new string (NULL when out of memory). */
static char *
bio_text(BIO *m)
{
    char *p = NULL;
    long n = BIO_get_mem_data(m, &p);
    char *s = malloc((size_t)(n > 0 ? n : 0) + 1);
    if (s == NULL)
        return NULL;
    if (n > 0)
        memcpy(s, p, (size_t)n);
    s[n > 0 ? n : 0] = '\0';
    return s;
}

/* The client certificate's subject or issuer, RFC 2253 as mod_ssl
 * writes it. */
static char *
name_text(const X509_NAME *name)
{
    BIO *m = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (m && X509_NAME_print_ex(m, name, 0, XN_FLAG_RFC2253) >= 0)
        s = bio_text(m);
    BIO_free(m);
    return s;
}

static char *
pem_text(X509 *cert)
{
    BIO *m = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (m && PEM_write_bio_X509(m, cert) == 1)
        s = bio_text(m);
    BIO_free(m);
    return s;
}

/* The facts of a finished handshake, in one allocation. */
static wc_tls_info_t *
make_info(wc_tls_conn_t *c)
{
    SSL *ssl = c->ssl;
    const char *parts[8] = {SSL_get_version(ssl), SSL_get_cipher_name(ssl),
                            "NONE", NULL, NULL, NULL,
                            c->sni[0] ? c->sni : NULL,
                            SSL_session_reused(ssl) ? "Resumed"
                                                    : "Initial"};
    char *own[3] = {NULL, NULL, NULL};
    wc_tls_info_t *info = NULL;
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer) {
        parts[2] = SSL_get_verify_result(ssl) == X509_V_OK ? "SUCCESS"
                                                           : "FAILED";
        own[0] = name_text(X509_get_subject_name(peer));
        own[1] = name_text(X509_get_issuer_name(peer));
        own[2] = pem_text(peer);
        if (own[0] == NULL || own[1] == NULL || own[2] == NULL)
            goto done;
        parts[3] = own[0];
        parts[4] = own[1];
        parts[5] = own[2];
    }
    size_t size = sizeof(*info);
    for (int i = 0; i < 8; i++) {
        if (parts[i] == NULL && i < 2)
            parts[i] = "";
        if (parts[i])
            size += strlen(parts[i]) + 1;
    }
    info = calloc(1, size);
    if (info == NULL)
        goto done;
    atomic_init(&info->refs, 1);
    const char **fields[8] = {&info->protocol, &info->cipher, &info->verify,
                              &info->s_dn, &info->i_dn, &info->cert,
                              &info->sni, &info->resumed};
    char *at = info->data;
    for (int i = 0; i < 8; i++) {
        if (parts[i] == NULL)
            continue;
        size_t n = strlen(parts[i]) + 1;
        memcpy(at, parts[i], n);
        *fields[i] = at;
        at += n;
    }
done:
    for (int i = 0; i < 3; i++)
        free(own[i]);
    ERR_clear_error();
    return info;
}

static int
is_letter(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

int
wc_tls_handshake(wc_tls_conn_t *c)
{
    if (!c->sniffed) {
        /* A TLS client starts with a handshake record (0x16); an HTTP
         * client with a method's first letter. */
        unsigned char first;
        ssize_t n;
        do {
            n = recv(c->fd, &first, 1, MSG_PEEK | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? WC_TLS_WANT_READ
                                                           : -errno;
        if (n == 0)
            return UV_EOF;
        c->sniffed = 1;
        if (is_letter(first))
            return WC_TLS_PLAIN;
    }
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        /* The client's Finished is acknowledged now rather than by the
         * delayed ACK: without a session ticket we send nothing after it,
         * and a client with Nagle's algorithm on holds its first request
         * until that ACK comes, 40 ms later.  Harmless where it does not
         * apply (a ticket was sent, a unix socket). */
        int one = 1;
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
        c->info = make_info(c);
        /* The client's first records may have come with its Finished. */
        c->more = SSL_has_pending(c->ssl) != 0;
        return c->info ? WC_TLS_DONE : UV_ENOMEM;
    }
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ)
        return WC_TLS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return WC_TLS_WANT_WRITE;
    return UV_EPROTO;
}

int
wc_tls_alpn_h2(wc_tls_conn_t *c)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}

wc_tls_info_t *
wc_tls_info(wc_tls_conn_t *c)
{
    if (c->info)
        atomic_fetch_add(&c->info->refs, 1);
    return c->info;
}

/* Before an SSL_read or SSL_write: SSL_get_error needs the thread's error
 * queue empty.  It nearly always is (every failure clears it): looking
 * costs less than ERR_clear_error's sweep of every slot. */
static inline void
clear_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* An SSL_read or SSL_write that returned r <= 0, as -errno, or
 * WC_TLS_NEEDS_OUT. */
static ssize_t
failure(wc_tls_conn_t *c, int r)
{
    int sys = errno;    /* the socket's, for SSL_ERROR_SYSCALL */
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        /* For a read, one that must write to a full socket first: it is
         * retried once the socket takes bytes, not at the next EPOLLIN,
         * which would come back for as long as the client sends while
         * the read cannot go on.  OpenSSL 3.0 leaves a KeyUpdate's answer
         * to the next SSL_write, and sends a refused renegotiation's
         * alert only if it can, so its SSL_read is not seen to return
         * this; SSL_read's contract allows it all the same. */
        return WC_TLS_NEEDS_OUT;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (sys == EINTR || sys == EAGAIN)
            return -EAGAIN;
        return sys ? -sys : 0;
    default:
        return -EPROTO;
    }
}

ssize_t
wc_tls_read(wc_tls_conn_t *c, char *buf, size_t n, int idle)
{
    size_t got = 0;
    /* Whole records while a whole one fits (an SSL_read given room for a
     * full record, 16 KiB of plaintext at most, never leaves part of one
     * decrypted), until neither OpenSSL nor the socket has more.  What
     * OpenSSL still holds when this stops for room is the caller's to
     * come back for (wc_tls_has_pending). */
    WC_ASSERT(n >= RECORD);
    while (n - got >= RECORD) {
        size_t want = n - got;
        clear_errors();
        int r = SSL_read(c->ssl, buf + got, want > INT_MAX ? INT_MAX
                                                           : (int)want);
        if (r > 0) {
            got += (size_t)r;
            /* A short record while the caller waits for a new request is
             * usually all the client sent for now: when OpenSSL holds no
             * more, stop rather than pay a read that fails with EAGAIN.
             * Anything the socket still holds keeps it readable (epoll is
             * level-triggered), so the next round reads it.  Not in a
             * body: a client that sends it in small records would pay an
             * epoll round for each. */
            if (idle && (size_t)r < RECORD && !SSL_has_pending(c->ssl)) {
                c->more = 0;
                return (ssize_t)got;
            }
            continue;
        }
        /* After a read that wanted the socket, what OpenSSL holds is at
         * most the start of a record whose rest the socket will bring:
         * epoll reports it. */
        c->more = 0;
        ssize_t rv = failure(c, r);
        /* Bytes before an end or an error are returned first; the end is
         * met again by the next read. */
        return got > 0 ? (ssize_t)got : rv;
    }
    c->more = SSL_has_pending(c->ssl) != 0;     /* stopped for room */
    return (ssize_t)got;
}

int
wc_tls_has_pending(wc_tls_conn_t *c)
{
    /* Noted by the read itself: a worker may be writing through the SSL
     * object now (wc_tls_writev), and only the reader under the channel's
     * lock may look inside it. */
    return c->more;
}

ssize_t
wc_tls_writev(wc_tls_conn_t *c, const struct iovec *iov, int n)
{
    /* Coalesced records are made on the caller's stack: the loop and
     * workers (each under its own channel's lock) write at once. */
    char rec[RECORD];
    size_t done = 0, off = 0, total = 0;
    int i = 0;
    for (int j = 0; j < n; j++)
        total += iov[j].iov_len;
    while (i < n) {
        size_t left = iov[i].iov_len - off;
        if (left == 0) {
            i++;
            off = 0;
            continue;
        }
        const char *p;
        size_t len;
        if (left >= RECORD || i == n - 1) {
            /* From the bytes themselves: a retry after WANT_WRITE offers
             * the same bytes again, perhaps more of them
             * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). */
            p = (const char *)iov[i].iov_base + off;
            len = left < RECORD ? left : RECORD;
        } else {
            /* Small pieces (a head, chunk framing, a body) coalesced into
             * one record. */
            len = 0;
            size_t o = off;
            for (int j = i; j < n && len < RECORD; j++, o = 0) {
                size_t take = iov[j].iov_len - o;
                if (take > RECORD - len)
                    take = RECORD - len;
                memcpy(rec + len, (const char *)iov[j].iov_base + o,
                       take);
                len += take;
            }
            p = rec;
        }
        clear_errors();
        c->wmore = total - done > len;
        int r = SSL_write(c->ssl, p, (int)len);
        c->wmore = 0;
        if (r <= 0) {
            /* Either want: the caller retries at POLLOUT (TLS 1.3 and no
             * renegotiation: a write never waits for a read). */
            ssize_t rv = failure(c, r);
            if (rv == -EAGAIN || rv == WC_TLS_NEEDS_OUT)
                break;
            return rv == 0 ? -EPIPE : rv;
        }
        done += (size_t)r;
        size_t adv = (size_t)r;
        while (adv > 0) {
            size_t in = iov[i].iov_len - off;
            if (adv < in) {
                off += adv;
                break;
            }
            adv -= in;
            i++;
            off = 0;
        }
    }
    if (done == 0 && i < n)
        return -EAGAIN;
    return (ssize_t)done;
}

void
wc_tls_close_notify(wc_tls_conn_t *c)
{
    if (!SSL_is_init_finished(c->ssl))
        return;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
}

#else /* WC_NO_TLS: no OpenSSL */

#include <errno.h>
#include <stdio.h>

int
wc_tls_new(wc_tls_t **out, const wc_tls_opts_t *o, char *err, size_t errlen,
           char *warn, size_t warnlen)
{
    *out = NULL;
    warn[0] = '\0';
    snprintf(err, errlen, "%s", WC_TLS_MISSING);
    return -1;
}

/* Unreachable without a context; kept so that callers need no #ifdef. */
void wc_tls_free(wc_tls_t *t) {}
wc_tls_conn_t *wc_tls_conn_new(wc_tls_t *t, int fd) { return NULL; }
void wc_tls_conn_free(wc_tls_conn_t *c) {}
int wc_tls_handshake(wc_tls_conn_t *c) { return UV_EPROTO; }
int wc_tls_alpn_h2(wc_tls_conn_t *c) { return 0; }
wc_tls_info_t *wc_tls_info(wc_tls_conn_t *c) { return NULL; }
ssize_t wc_tls_read(wc_tls_conn_t *c, char *buf, size_t n, int idle) { return -EPROTO; }
int wc_tls_has_pending(wc_tls_conn_t *c) { return 0; }
ssize_t wc_tls_writev(wc_tls_conn_t *c, const struct iovec *iov, int n)
{
    return -EPROTO;
}
void wc_tls_close_notify(wc_tls_conn_t *c) {}

#endif /* WC_NO_TLS */
