/* environ.c: the PEP 3333 environ of one request.  The environ keys and a
 * few common values are interned once per process (keys[] below): they are
 * constants, never attacker-controlled, so the interned table cannot grow
 * with traffic.  Request headers with a prebuilt key skip building one;
 * PATH_INFO is percent-decoded as latin-1 with url_prefix removed;
 * wsgi.input takes the request body without copying it.
 *
 * GIL map: worker threads, GIL held.
 */
#include "wc.h"

#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

enum {
    K_REQUEST_METHOD, K_SERVER_PROTOCOL, K_PATH_INFO, K_QUERY_STRING,
    K_REQUEST_URI, K_REMOTE_ADDR, K_REMOTE_HOST, K_REMOTE_PORT,
    K_WSGI_INPUT, K_WSGI_ERRORS, K_CLIENT_DISCONNECTED, K_CONTENT_LENGTH,
    K_CONTENT_TYPE, K_HTTP_HOST, K_SCRIPT_NAME, K_SERVER_NAME,
    K_SERVER_PORT, K_SERVER_SOFTWARE, K_WSGI_VERSION, K_WSGI_URL_SCHEME,
    K_WSGI_MULTITHREAD, K_WSGI_MULTIPROCESS, K_WSGI_RUN_ONCE,
    K_WSGI_INPUT_TERMINATED, K_WSGI_FILE_WRAPPER, K_WSGI_EARLY_HINTS,
    /* set_tls's, in wc_tls_info_t's order */
    K_SSL_PROTOCOL, K_SSL_CIPHER, K_SSL_CLIENT_VERIFY, K_SSL_CLIENT_S_DN,
    K_SSL_CLIENT_I_DN, K_SSL_CLIENT_CERT, K_SSL_TLS_SNI,
    K_SSL_SESSION_RESUMED,
    V_HTTP10, V_HTTP11, V_HTTP2, V_EMPTY, V_GET, V_POST, V_HEAD, V_PUT, V_DELETE,
    V_OPTIONS, V_PATCH,
    NKEYS
};

static const char *const key_names[NKEYS] = {
    "REQUEST_METHOD", "SERVER_PROTOCOL", "PATH_INFO", "QUERY_STRING",
    "REQUEST_URI", "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_PORT",
    "wsgi.input", "wsgi.errors", "waitress.client_disconnected",
    "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_HOST", "SCRIPT_NAME",
    "SERVER_NAME", "SERVER_PORT", "SERVER_SOFTWARE", "wsgi.version",
    "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess",
    "wsgi.run_once", "wsgi.input_terminated", "wsgi.file_wrapper",
    "wsgi.early_hints",
    "SSL_PROTOCOL", "SSL_CIPHER", "SSL_CLIENT_VERIFY", "SSL_CLIENT_S_DN",
    "SSL_CLIENT_I_DN", "SSL_CLIENT_CERT", "SSL_TLS_SNI",
    "SSL_SESSION_RESUMED",
    "HTTP/1.0", "HTTP/1.1", "HTTP/2", "", "GET", "POST", "HEAD", "PUT", "DELETE",
    "OPTIONS", "PATCH",
};

static PyObject *keys[NKEYS];
static PyObject *te_key;    /* HTTP_TRANSFER_ENCODING, borrowed from known */

/* Request headers with a prebuilt environ key.  `proxy` marks the ones
 * dropped when untrusted proxy headers are cleared. */
struct known_header {
    const char *lname;
    const char *key;
    int proxy;
    PyObject *obj;
    size_t len;
};

static struct known_header known[] = {
    {"host", "HTTP_HOST", 0, NULL},
    {"user-agent", "HTTP_USER_AGENT", 0, NULL},
    {"accept", "HTTP_ACCEPT", 0, NULL},
    {"accept-encoding", "HTTP_ACCEPT_ENCODING", 0, NULL},
    {"accept-language", "HTTP_ACCEPT_LANGUAGE", 0, NULL},
    {"connection", "HTTP_CONNECTION", 0, NULL},
    {"cookie", "HTTP_COOKIE", 0, NULL},
    {"content-type", "CONTENT_TYPE", 0, NULL},
    {"content-length", "CONTENT_LENGTH", 0, NULL},
    {"referer", "HTTP_REFERER", 0, NULL},
    {"origin", "HTTP_ORIGIN", 0, NULL},
    {"cache-control", "HTTP_CACHE_CONTROL", 0, NULL},
    {"authorization", "HTTP_AUTHORIZATION", 0, NULL},
    {"if-none-match", "HTTP_IF_NONE_MATCH", 0, NULL},
    {"if-modified-since", "HTTP_IF_MODIFIED_SINCE", 0, NULL},
    {"pragma", "HTTP_PRAGMA", 0, NULL},
    {"expect", "HTTP_EXPECT", 0, NULL},
    {"transfer-encoding", "HTTP_TRANSFER_ENCODING", 0, NULL},
    {"upgrade-insecure-requests", "HTTP_UPGRADE_INSECURE_REQUESTS", 0, NULL},
    {"x-requested-with", "HTTP_X_REQUESTED_WITH", 0, NULL},
    {"forwarded", "HTTP_FORWARDED", 1, NULL},
    {"x-forwarded-for", "HTTP_X_FORWARDED_FOR", 1, NULL},
    {"x-forwarded-host", "HTTP_X_FORWARDED_HOST", 1, NULL},
    {"x-forwarded-proto", "HTTP_X_FORWARDED_PROTO", 1, NULL},
    {"x-forwarded-port", "HTTP_X_FORWARDED_PORT", 1, NULL},
    {"x-forwarded-by", "HTTP_X_FORWARDED_BY", 1, NULL},
};
#define NKNOWN (sizeof(known) / sizeof(known[0]))

int
wc_environ_init(void)
{
    for (int i = 0; i < NKEYS; i++) {
        if (keys[i])
            continue;
        keys[i] = PyUnicode_InternFromString(key_names[i]);
        if (keys[i] == NULL)
            return -1;
    }
    for (size_t i = 0; i < NKNOWN; i++) {
        if (known[i].obj)
            continue;
        known[i].obj = PyUnicode_InternFromString(known[i].key);
        if (known[i].obj == NULL)
            return -1;
        known[i].len = strlen(known[i].lname);
        if (strcmp(known[i].lname, "transfer-encoding") == 0)
            te_key = known[i].obj;
    }
    return 0;
}

static int
hexdig(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* New reference: bytes as a latin-1 str. */
static PyObject *
latin1(const char *p, size_t n)
{
    return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

/* New reference: PATH_INFO, percent-decoded as latin-1, leading slashes
 * collapsed, url_prefix removed.  `uri` is REQUEST_URI: when nothing
 * changes the target, it is PATH_INFO too. */
static PyObject *
make_path(ServerObject *so, wc_request_t *req, PyObject *uri)
{
    if (req->path == req->target && req->path_len == req->target_len
        && PyUnicode_GET_LENGTH(so->url_prefix) == 0
        && memchr(req->path, '%', req->path_len) == NULL
        && !(req->path_len > 1 && req->path[1] == '/'))
        return Py_NewRef(uri);
    char small[512];
    char *buf = req->path_len <= sizeof(small) ? small
                                               : PyMem_Malloc(req->path_len);
    if (buf == NULL)
        return PyErr_NoMemory();
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)req->path;
    for (size_t i = 0; i < req->path_len; i++) {
        int a, b;
        if (p[i] == '%' && i + 2 < req->path_len
            && (a = hexdig(p[i + 1])) >= 0 && (b = hexdig(p[i + 2])) >= 0) {
            buf[n++] = (char)(a * 16 + b);
            i += 2;
        } else {
            buf[n++] = (char)p[i];
        }
    }
    const char *s = buf;
    while (n > 1 && s[0] == '/' && s[1] == '/') {
        s++;
        n--;
    }
    /* The prefix as latin-1 bytes, like the path (None when it has other
     * characters: then it matches no path). */
    PyObject *pb = so->url_prefix_bytes;
    Py_ssize_t plen = pb != Py_None ? PyBytes_GET_SIZE(pb) : 0;
    if (plen > 0) {
        const char *pre = PyBytes_AS_STRING(pb);
        if ((size_t)plen <= n && memcmp(s, pre, (size_t)plen) == 0) {
            if ((size_t)plen == n) {
                n = 0;
            } else if (s[plen] == '/') {
                s += plen;
                n -= (size_t)plen;
            }
        }
    }
    PyObject *r = latin1(s, n);
    if (buf != small)
        PyMem_Free(buf);
    return r;
}

/* Borrowed: the environ key for a header name, or NULL for a generic name
 * (then *generic is a new reference), or NULL with *skip set. */
static PyObject *
header_key(ServerObject *so, const wc_header_t *h, PyObject **generic,
           int *skip)
{
    char low[64];
    *generic = NULL;
    *skip = 0;
    if (h->name_len < sizeof(low)) {
        for (uint32_t i = 0; i < h->name_len; i++) {
            unsigned char c = (unsigned char)h->name[i];
            low[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        for (size_t i = 0; i < NKNOWN; i++) {
            if (known[i].len == h->name_len
                && memcmp(known[i].lname, low, h->name_len) == 0) {
                if (known[i].proxy && so->srv->cfg.drop_proxy_headers) {
                    *skip = 1;
                    return NULL;
                }
                return known[i].obj;
            }
        }
    }
    PyObject *key = PyUnicode_New(5 + h->name_len, 127);
    if (key == NULL)
        return NULL;
    char *d = (char *)PyUnicode_DATA(key);
    memcpy(d, "HTTP_", 5);
    for (uint32_t i = 0; i < h->name_len; i++) {
        unsigned char c = (unsigned char)h->name[i];
        if (c >= 'a' && c <= 'z')
            c -= 32;
        else if (c == '-')
            c = '_';
        else if (c >= 0x80)
            c = '_';    /* unreachable: names are tokens */
        d[5 + i] = (char)c;
    }
    *generic = key;
    return key;
}

static PyObject *
method_value(wc_request_t *req)
{
    static const int ids[] = {V_GET, V_POST, V_HEAD, V_PUT, V_DELETE,
                              V_OPTIONS, V_PATCH};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        const char *m = key_names[ids[i]];
        if (strlen(m) == req->method_len
            && memcmp(m, req->method, req->method_len) == 0)
            return Py_NewRef(keys[ids[i]]);
    }
    return latin1(req->method, req->method_len);
}

/* New reference: wsgi.input for the request's body, which it takes. */
static PyObject *
make_input(ServerObject *so, wc_request_t *req)
{
    wc_spool_t *b = &req->body;
    if (b->fd < 0) {
        char *data = b->mem.data;
        size_t len = b->mem.len;
        b->mem.data = NULL;
        b->mem.len = b->mem.cap = 0;
        return wc_input_new((PyTypeObject *)so->input_type, data, len);
    }
    if (lseek(b->fd, 0, SEEK_SET) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *f = PyObject_CallFunction(so->io_open, "isi", b->fd, "rb", -1);
    if (f != NULL)
        b->fd = -1;     /* the file object owns it now */
    return f;
}

/* New reference: REMOTE_ADDR as the connection gives it ("localhost" on
 * a unix socket). */
PyObject *
wc_environ_peer(wc_channel_t *ch)
{
    char addr[INET6_ADDRSTRLEN];
    size_t n = 0;
    if (ch->peer_family == 0)
        return PyUnicode_FromString("localhost");
    if (ch->peer_family == 4) {
        /* glibc's inet_ntop formats IPv4 with sprintf: by hand, it is a
         * tenth of the cost, on every request. */
        for (int i = 0; i < 4; i++) {
            if (i)
                addr[n++] = '.';
            n += wc_fmt_u64(addr + n, ch->peer_addr[i]);
        }
        return PyUnicode_DecodeLatin1(addr, (Py_ssize_t)n, NULL);
    }
    inet_ntop(AF_INET6, ch->peer_addr, addr, sizeof(addr));
    return PyUnicode_FromString(addr);
}

/* The keys every request sets go into the listener's template too, as
 * None: the copy a request starts from then has them, in a table with
 * room for the headers, and filling it in replaces values.  Without them
 * the copy was sized for the template alone and grew (a rehash of every
 * key) on each request. */
int
wc_environ_reserve(PyObject *tmpl)
{
    static const int ids[] = {
        K_REQUEST_METHOD, K_SERVER_PROTOCOL, K_REQUEST_URI, K_PATH_INFO,
        K_QUERY_STRING, K_REMOTE_ADDR, K_REMOTE_HOST, K_REMOTE_PORT,
        K_WSGI_ERRORS, K_WSGI_INPUT, K_CLIENT_DISCONNECTED,
        K_WSGI_EARLY_HINTS,
    };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        if (PyDict_SetItem(tmpl, keys[ids[i]], Py_None) < 0)
            return -1;
    }
    return 0;
}

/* Borrowed: the template of the environ of sr's request: the listener's,
 * with wsgi.early_hints set to sr's EarlyHints.  Each StartResponse (one
 * a worker, reused from request to request) keeps these copies, so the
 * key costs no dict store per request: they are made when the
 * StartResponse is new and updated when its EarlyHints is renewed. */
static PyObject *
sr_template(ServerObject *so, StartResponseObject *sr, int listener)
{
    int renewed = wc_early_hints_take(sr, (PyTypeObject *)so->hints_type);
    if (renewed < 0)
        return NULL;
    PyObject *hk = keys[K_WSGI_EARLY_HINTS];
    if (sr->tmpls == NULL) {
        Py_ssize_t n = PyTuple_GET_SIZE(so->templates);
        PyObject *t = PyTuple_New(n);                       /* new */
        if (t == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            /* The copy keeps the template's table size, with its room
             * for the headers; the key is there already, as None. */
            PyObject *d = PyDict_Copy(PyTuple_GET_ITEM(so->templates, i));
            if (d == NULL || PyDict_SetItem(d, hk, sr->hints) < 0) {
                Py_XDECREF(d);
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i, d);                      /* stolen */
        }
        sr->tmpls = t;
    } else if (renewed) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(sr->tmpls); i++) {
            if (PyDict_SetItem(PyTuple_GET_ITEM(sr->tmpls, i), hk,
                               sr->hints) < 0) {
                /* Some still hold the old one: made again next time. */
                Py_CLEAR(sr->tmpls);
                return NULL;
            }
        }
    }
    return PyTuple_GET_ITEM(sr->tmpls, listener);
}

/* The connection's TLS facts, under mod_ssl's names (made from the C
 * strings the loop gathered at the handshake).  The short ones (version,
 * suite, verification, the name asked for, resumption) are nearly always the same as
 * the last request's, whatever the connection: the str made last time is
 * kept in the Server (so->tls_vals, GIL held; `slot` says where) and used
 * again when its text is the same, rather than a new one made for every
 * request.  A client certificate's are left out: long, and one client's. */
static int
set_tls(ServerObject *so, PyObject *env, const wc_tls_info_t *t)
{
    const char *values[] = {t->protocol, t->cipher, t->verify,
                            t->s_dn, t->i_dn, t->cert, t->sni, t->resumed};
    static const int slot[] = {0, 1, 2, -1, -1, -1, 3, 4};
    Py_BUILD_ASSERT(sizeof(slot) == sizeof(values) / sizeof(values[0])
                    * sizeof(int));
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        if (values[i] == NULL)
            continue;
        size_t n = strlen(values[i]);
        PyObject *v;
        PyObject *last = slot[i] >= 0 ? so->tls_vals[slot[i]] : NULL;
        if (last != NULL && PyUnicode_KIND(last) == PyUnicode_1BYTE_KIND
            && (size_t)PyUnicode_GET_LENGTH(last) == n
            && memcmp(PyUnicode_1BYTE_DATA(last), values[i], n) == 0) {
            v = Py_NewRef(last);
        } else {
            v = latin1(values[i], n);
            if (v == NULL)
                return -1;
            if (slot[i] >= 0) {
                PyObject *old = so->tls_vals[slot[i]];
                so->tls_vals[slot[i]] = Py_NewRef(v);
                Py_XDECREF(old);
            }
        }
        int rv = PyDict_SetItem(env, keys[K_SSL_PROTOCOL + i], v);
        Py_DECREF(v);
        if (rv < 0)
            return -1;
    }
    return 0;
}

/* New reference: the environ for one request, whose StartResponse is sr. */
PyObject *
wc_environ_build(ServerObject *so, wc_channel_t *ch, wc_request_t *req,
                 StartResponseObject *sr, PyObject **path_out)
{
    PyObject *tmpl = sr_template(so, sr, ch->listener);    /* borrowed */
    PyObject *env = tmpl ? PyDict_Copy(tmpl) : NULL;
    PyObject *v;
    if (env == NULL)
        return NULL;

#define SET_NEW(key, expr)                              \
    do {                                                \
        v = (expr);                                     \
        if (v == NULL || PyDict_SetItem(env, key, v) < 0) \
            goto error;                                 \
        Py_CLEAR(v);                                    \
    } while (0)

    SET_NEW(keys[K_REQUEST_METHOD], method_value(req));
    if (PyDict_SetItem(env, keys[K_SERVER_PROTOCOL],
                       keys[req->version == 11   ? V_HTTP11
                            : req->version == 20 ? V_HTTP2
                                                 : V_HTTP10]) < 0)
        goto error;
    PyObject *uri = latin1(req->target, req->target_len);
    if (uri == NULL || PyDict_SetItem(env, keys[K_REQUEST_URI], uri) < 0) {
        Py_XDECREF(uri);
        goto error;
    }
    v = make_path(so, req, uri);
    Py_DECREF(uri);
    if (v == NULL || PyDict_SetItem(env, keys[K_PATH_INFO], v) < 0)
        goto error;
    *path_out = v;      /* the caller's reference, for log lines */
    v = NULL;
    if (req->query)
        SET_NEW(keys[K_QUERY_STRING], latin1(req->query, req->query_len));
    else if (PyDict_SetItem(env, keys[K_QUERY_STRING], keys[V_EMPTY]) < 0)
        goto error;
    v = wc_environ_peer(ch);
    if (v == NULL || PyDict_SetItem(env, keys[K_REMOTE_ADDR], v) < 0
        || PyDict_SetItem(env, keys[K_REMOTE_HOST], v) < 0)
        goto error;
    Py_CLEAR(v);
    if (ch->peer_family == 0) { /* waitress: str(None) on unix sockets */
        SET_NEW(keys[K_REMOTE_PORT], PyUnicode_FromString("None"));
    } else {
        char num[24];
        SET_NEW(keys[K_REMOTE_PORT],
                latin1(num, wc_fmt_u64(num, ch->peer_port)));
    }
    PyObject *err = PySys_GetObject("stderr");   /* borrowed */
    if (err ? PyDict_SetItem(env, keys[K_WSGI_ERRORS], err) < 0
            : PyDict_DelItem(env, keys[K_WSGI_ERRORS]) < 0)
        goto error;
    SET_NEW(keys[K_WSGI_INPUT], make_input(so, req));
    SET_NEW(keys[K_CLIENT_DISCONNECTED],
            wc_disconnected_new((PyTypeObject *)so->disc_type, ch));
    if (req->tls && set_tls(so, env, req->tls) < 0)
        goto error;

    for (uint32_t i = 0; i < req->nheaders; i++) {
        const wc_header_t *h = &req->headers[i];
        PyObject *generic;
        int skip;
        PyObject *key = header_key(so, h, &generic, &skip);
        if (skip)
            continue;
        if (key == NULL)
            goto error;
        if (req->chunked && key == te_key) {
            Py_XDECREF(generic);
            continue;       /* HTTP_TRANSFER_ENCODING: decoded here */
        }
        PyObject *val = latin1(h->value, h->value_len);
        if (val == NULL) {
            Py_XDECREF(generic);
            goto error;
        }
        PyObject *old = PyDict_GetItemWithError(env, key);
        if (old) {
            PyObject *joined = PyUnicode_FromFormat("%U, %U", old, val);
            Py_DECREF(val);
            val = joined;
        } else if (PyErr_Occurred()) {
            Py_DECREF(val);
            Py_XDECREF(generic);
            goto error;
        }
        int rv = val ? PyDict_SetItem(env, key, val) : -1;
        Py_XDECREF(val);
        Py_XDECREF(generic);
        if (rv < 0)
            goto error;
    }
    if (req->authority)
        SET_NEW(keys[K_HTTP_HOST], latin1(req->authority,
                                          req->authority_len));
    if (req->chunked) {
        char num[24];
        SET_NEW(keys[K_CONTENT_LENGTH],
                latin1(num, wc_fmt_u64(num, req->body.len)));
    }
#undef SET_NEW
    return env;

error:
    Py_XDECREF(v);
    Py_DECREF(env);
    return NULL;
}
