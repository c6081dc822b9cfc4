/* wsgi.c: one request on a worker.  Builds the PEP 3333 environ, calls the
 * application, frames its response (Content-Length, chunked, or
 * close-delimited), writes it through the channel, and always calls the
 * result's close().
 *
 * GIL map: worker threads, GIL held throughout, except while parked on a
 * full output queue (wc_channel_wait_drained, GIL released).
 *
 * The environ keys and a few common values are interned once per process
 * (keys[] below): they are constants, never attacker-controlled, so the
 * interned table cannot grow with traffic.
 */
#include "wc.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

enum {
    K_REQUEST_METHOD, K_SERVER_PROTOCOL, K_PATH_INFO, K_QUERY_STRING,
    K_REQUEST_URI, K_REMOTE_ADDR, K_REMOTE_HOST, K_REMOTE_PORT,
    K_WSGI_INPUT, K_WSGI_ERRORS, K_CLIENT_DISCONNECTED, K_CONTENT_LENGTH,
    K_CONTENT_TYPE, K_HTTP_HOST, K_SCRIPT_NAME, K_SERVER_NAME,
    K_SERVER_PORT, K_SERVER_SOFTWARE, K_WSGI_VERSION, K_WSGI_URL_SCHEME,
    K_WSGI_MULTITHREAD, K_WSGI_MULTIPROCESS, K_WSGI_RUN_ONCE,
    K_WSGI_INPUT_TERMINATED, K_WSGI_FILE_WRAPPER,
    V_HTTP10, V_HTTP11, V_EMPTY, V_GET, V_POST, V_HEAD, V_PUT, V_DELETE,
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
    "HTTP/1.0", "HTTP/1.1", "", "GET", "POST", "HEAD", "PUT", "DELETE",
    "OPTIONS", "PATCH",
};

static PyObject *keys[NKEYS];
static PyObject *te_key;    /* HTTP_TRANSFER_ENCODING, borrowed from known */

/* New reference to the exception being raised, normalized, with its
 * traceback attached; clears the error indicator. */
static PyObject *
fetch_exc(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}

/* Raise `exc` again (stolen), as fetch_exc took it. */
static void
restore_exc(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                  PyException_GetTraceback(exc));
#endif
}

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
wc_wsgi_init(PyObject *module)
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

/* ---- small helpers ------------------------------------------------------ */

const char *
wc_date(wc_worker_t *w, size_t *len)
{
    time_t now = time(NULL);
    if (now != w->date_sec || w->date_len == 0) {
        struct tm tm;
        gmtime_r(&now, &tm);
        w->date_len = strftime(w->date, sizeof(w->date),
                               "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_sec = now;
    }
    *len = w->date_len;
    return w->date;
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

/* New reference: the environ for one request. */
static PyObject *
build_environ(ServerObject *so, wc_channel_t *ch, wc_request_t *req,
              PyObject **path_out)
{
    PyObject *tmpl = PyTuple_GET_ITEM(so->templates, ch->listener);
    PyObject *env = PyDict_Copy(tmpl);
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
                       keys[req->version == 11 ? V_HTTP11 : V_HTTP10]) < 0)
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
    char addr[INET6_ADDRSTRLEN];
    if (ch->peer_family == 0)
        strcpy(addr, "localhost");
    else
        inet_ntop(ch->peer_family == 6 ? AF_INET6 : AF_INET, ch->peer_addr,
                  addr, sizeof(addr));
    v = PyUnicode_FromString(addr);
    if (v == NULL || PyDict_SetItem(env, keys[K_REMOTE_ADDR], v) < 0
        || PyDict_SetItem(env, keys[K_REMOTE_HOST], v) < 0)
        goto error;
    Py_CLEAR(v);
    if (ch->peer_family == 0)   /* waitress: str(None) on unix sockets */
        SET_NEW(keys[K_REMOTE_PORT], PyUnicode_FromString("None"));
    else
        SET_NEW(keys[K_REMOTE_PORT], PyUnicode_FromFormat("%u",
                                                          ch->peer_port));
    PyObject *err = PySys_GetObject("stderr");   /* borrowed */
    if (err && PyDict_SetItem(env, keys[K_WSGI_ERRORS], err) < 0)
        goto error;
    SET_NEW(keys[K_WSGI_INPUT], make_input(so, req));
    SET_NEW(keys[K_CLIENT_DISCONNECTED],
            wc_disconnected_new((PyTypeObject *)so->disc_type, ch));

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
    if (req->chunked)
        SET_NEW(keys[K_CONTENT_LENGTH],
                PyUnicode_FromFormat("%llu",
                                     (unsigned long long)req->body.len));
#undef SET_NEW
    return env;

error:
    Py_XDECREF(v);
    Py_DECREF(env);
    return NULL;
}

/* ---- the response ------------------------------------------------------- */

typedef struct response_s {
    wc_worker_t *w;
    wc_channel_t *ch;
    ServerObject *so;
    StartResponseObject *sr;
    PyObject *path;
    int version;
    int is_head;
    int req_keep_alive;
    int has_body;
    int keep_alive;
    int chunked;
    int64_t cl;             /* framing Content-Length, -1 if none */
    uint64_t sent;          /* body bytes accepted (before framing) */
    int failed;             /* the client is gone */
    int warned_long;
    int warned_nobody;
    struct iovec iov[WC_IOV_MAX];
    int niov;
    char hex[WC_IOV_MAX / 2][20];
    int nhex;
} response_t;

static const char reason_400[] = "Bad Request";

static const char *
reason_phrase(int status)
{
    switch (status) {
    case 400: return reason_400;
    case 405: return "Method Not Allowed";
    case 413: return "Request Entity Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

static int
status_code(PyObject *status)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(status);
    if (n < 3)
        return 0;
    int code = 0;
    for (int i = 0; i < 3; i++) {
        Py_UCS4 c = PyUnicode_READ_CHAR(status, i);
        if (c < '0' || c > '9')
            return 0;
        code = code * 10 + (int)(c - '0');
    }
    return code;
}

/* Append a str that must be latin-1 to the head buffer. */
static int
put_str(wc_buf_t *b, PyObject *s)
{
    if (PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
        PyObject *e = PyUnicode_AsLatin1String(s);  /* raises */
        Py_XDECREF(e);
        if (e != NULL)
            PyErr_SetString(PyExc_UnicodeEncodeError, "latin-1");
        return -1;
    }
    if (wc_buf_append(b, PyUnicode_DATA(s),
                      (size_t)PyUnicode_GET_LENGTH(s)) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

#define PUT_LIT(b, s) wc_buf_append((b), (s), sizeof(s) - 1)

/* Decimal digits of v into buf (24 bytes); returns the length. */
static size_t
fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

static void
warn(response_t *r, const char *fmt, PyObject *arg)
{
    PyObject *res = PyObject_CallMethod(r->so->logger, "warning", "sO", fmt,
                                        arg);
    if (res == NULL)
        PyErr_Clear();
    Py_XDECREF(res);
}

/* Decide the framing and write the status line and headers into w->out.
 * `known_len` is the whole body's length when the server knows it (-1
 * otherwise).  Returns -1 with an exception set. */
static int
build_head(response_t *r, int64_t known_len)
{
    StartResponseObject *sr = r->sr;
    wc_buf_t *b = &r->w->out;
    wc_config_t *cfg = &r->so->srv->cfg;
    int code = status_code(sr->status);
    int app_cl = sr->content_length >= 0;

    r->has_body = !((code >= 100 && code < 200) || code == 204
                    || code == 304);
    /* Stopping: the requests already received are answered, the last
     * one with Connection: close. */
    r->keep_alive = r->req_keep_alive
                    && !(atomic_load(&r->so->srv->stopping) && !r->w->more);
    r->cl = -1;
    if (!r->has_body) {
        /* no body, no framing headers of ours */
    } else if (app_cl) {
        r->cl = sr->content_length;
    } else if (known_len > 0 || (known_len == 0 && !r->is_head)) {
        /* For HEAD, an empty body says nothing of the GET length. */
        r->cl = known_len;
    } else if (r->is_head) {
        /* HEAD: nothing follows the head, so no framing is needed. */
    } else if (r->version == 11) {
        r->chunked = 1;
    } else {
        r->keep_alive = 0;  /* HTTP/1.0: the close ends the body */
    }
    if (r->version == 10 && r->has_body && r->cl < 0 && !r->is_head)
        r->keep_alive = 0;

    b->len = 0;
    if ((r->version == 11 ? PUT_LIT(b, "HTTP/1.1 ") : PUT_LIT(b, "HTTP/1.0 "))
        < 0)
        goto nomem;
    if (put_str(b, sr->status) < 0)
        return -1;
    if (PUT_LIT(b, "\r\n") < 0)
        goto nomem;
    Py_ssize_t nh = PyList_GET_SIZE(sr->headers);
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *t = PyList_GET_ITEM(sr->headers, i);
        PyObject *name = PyTuple_GET_ITEM(t, 0);
        PyObject *value = PyTuple_GET_ITEM(t, 1);
        if (!r->has_body && WC_IEQ(name, "content-length"))
            continue;   /* 1xx/204/304 carry no Content-Length */
        if (put_str(b, name) < 0)
            return -1;
        if (PUT_LIT(b, ": ") < 0)
            goto nomem;
        if (put_str(b, value) < 0)
            return -1;
        if (PUT_LIT(b, "\r\n") < 0)
            goto nomem;
    }
    if (r->has_body && !app_cl && r->cl >= 0) {
        char num[24];
        size_t k = fmt_u64(num, (uint64_t)r->cl);
        if (PUT_LIT(b, "Content-Length: ") < 0 || wc_buf_append(b, num, k) < 0
            || PUT_LIT(b, "\r\n") < 0)
            goto nomem;
    }
    if (r->chunked && PUT_LIT(b, "Transfer-Encoding: chunked\r\n") < 0)
        goto nomem;
    if (!r->keep_alive) {
        if (PUT_LIT(b, "Connection: close\r\n") < 0)
            goto nomem;
    } else if (r->version == 10) {
        if (PUT_LIT(b, "Connection: Keep-Alive\r\n") < 0)
            goto nomem;
    }
    if (!sr->has_date) {
        size_t dlen;
        const char *d = wc_date(r->w, &dlen);
        if (PUT_LIT(b, "Date: ") < 0 || wc_buf_append(b, d, dlen) < 0
            || PUT_LIT(b, "\r\n") < 0)
            goto nomem;
    }
    if (sr->has_server) {
        if (wc_buf_appendf(b, "Via: %s\r\n",
                           cfg->ident[0] ? cfg->ident : "waitress_c") < 0)
            goto nomem;
    } else if (wc_buf_append(b, cfg->server_line, cfg->server_line_len)
               < 0) {
        goto nomem;
    }
    if (PUT_LIT(b, "\r\n") < 0)
        goto nomem;
    sr->headers_sent = 1;
    r->niov = 0;
    r->nhex = 0;
    r->iov[r->niov].iov_base = b->data;
    r->iov[r->niov].iov_len = b->len;
    r->niov++;
    return 0;

nomem:
    PyErr_NoMemory();
    return -1;
}

/* Send the gathered iovecs.  Parks (GIL released) while the channel holds
 * more than outbuf_high_watermark.  Returns -1 when the client is gone
 * (r->failed set, no exception). */
static int
flush_more(response_t *r, int defer)
{
    if (r->niov == 0 || r->failed)
        return r->failed ? -1 : 0;
    int rv = wc_channel_send(r->ch, r->iov, r->niov, defer);
    r->niov = 0;
    r->nhex = 0;
    r->w->out.len = 0;
    if (rv < 0) {
        r->failed = 1;
        return -1;
    }
    if (rv > 0) {
        /* Over the high watermark.  Other app threads may write() to this
         * response while this one is parked: r is consistent (nothing
         * gathered), and each parked thread is woken. */
        wc_channel_t *ch = r->ch;
        Py_BEGIN_ALLOW_THREADS
        rv = wc_channel_wait_drained(ch);
        Py_END_ALLOW_THREADS
        if (rv < 0) {
            r->failed = 1;
            return -1;
        }
    }
    return 0;
}

static int
flush(response_t *r)
{
    return flush_more(r, 0);
}

/* Queue body bytes (the memory must live until the next flush). */
static int
add_body(response_t *r, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (!r->has_body || r->is_head) {
        if (!r->has_body && !r->warned_nobody) {
            r->warned_nobody = 1;
            warn(r, "application-written content was ignored due to HTTP "
                    "response that may not contain a message-body: (%s)",
                 r->sr->status);
        }
        return 0;
    }
    if (r->cl >= 0) {
        uint64_t room = (uint64_t)r->cl - r->sent;
        if (n > room) {
            if (!r->warned_long) {
                r->warned_long = 1;
                PyObject *cl = PyLong_FromLongLong(r->cl);
                if (cl) {
                    warn(r, "application-written content exceeded the "
                            "number of bytes specified by Content-Length "
                            "header (%s)", cl);
                    Py_DECREF(cl);
                }
            }
            n = (size_t)room;
            if (n == 0)
                return 0;
        }
    }
    if (r->niov + 3 > WC_IOV_MAX && flush(r) < 0)
        return -1;
    if (r->chunked) {
        char *h = r->hex[r->nhex++];
        int k = snprintf(h, 20, "%zX\r\n", n);
        r->iov[r->niov].iov_base = h;
        r->iov[r->niov++].iov_len = (size_t)k;
    }
    r->iov[r->niov].iov_base = (void *)p;
    r->iov[r->niov++].iov_len = n;
    if (r->chunked) {
        r->iov[r->niov].iov_base = (void *)"\r\n";
        r->iov[r->niov++].iov_len = 2;
    }
    r->sent += n;
    return 0;
}

/* start_response's write(): headers first, then the data, sent at once.
 * Counted as a writer of the channel while it runs (it may park without
 * the GIL): the worker does not finish the response under it. */
int
wc_response_write(StartResponseObject *sr, const char *p, size_t n)
{
    response_t *r = sr->resp;
    wc_channel_t *ch = sr->ch;
    int rv = 0;
    wc_channel_writer_enter(ch);
    if (!sr->headers_sent && build_head(r, -1) < 0)
        rv = -1;
    else if (add_body(r, p, n) < 0 || flush(r) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_OSError, "Client disconnected");
        rv = -1;
    }
    wc_channel_writer_leave(ch);
    return rv;
}

/* The app's part is over: write() raises from now on, and app threads
 * still inside write() are waited for (GIL released). */
static void
end_writes(response_t *r)
{
    if (r->sr == NULL)
        return;
    r->sr->active = 0;
    if (wc_channel_has_writers(r->ch)) {
        Py_BEGIN_ALLOW_THREADS
        wc_channel_wait_writers(r->ch);
        Py_END_ALLOW_THREADS
    }
}

/* Log an exception from the app and answer it if we still can. */
static void
app_failed(response_t *r, int *close)
{
    PyObject *exc = fetch_exc();
    *close = 1;
    if (exc == NULL)
        return;
    if (r->failed) {
        /* Client gone: not the app's fault. */
        PyObject *res = PyObject_CallMethod(r->so->logger, "info", "sO",
                                            "Client disconnected while "
                                            "serving %s",
                                            r->path ? r->path : Py_None);
        Py_XDECREF(res);
        PyErr_Clear();
        Py_XDECREF(exc);
        return;
    }
    if (!r->sr->headers_sent
        && PyObject_TypeCheck(exc, (PyTypeObject *)r->so->bad_request)) {
        PyObject *s = PyObject_Str(exc);
        Py_ssize_t n = 0;
        const char *d = s ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
        if (d == NULL) {
            PyErr_Clear();
            d = "";
            n = 0;
        }
        wc_wsgi_error_response(r->w, r->ch, r->version, 400, d, (size_t)n);
        Py_XDECREF(s);
        Py_DECREF(exc);
        return;
    }
    PyObject *kw = Py_BuildValue("{sO}", "exc_info", exc);
    PyObject *fn = PyObject_GetAttrString(r->so->logger, "error");
    if (kw && fn) {
        PyObject *args = Py_BuildValue("(sO)", "Exception while serving %s",
                                       r->path ? r->path : Py_None);
        PyObject *res = args ? PyObject_Call(fn, args, kw) : NULL;
        Py_XDECREF(args);
        Py_XDECREF(res);
    }
    Py_XDECREF(kw);
    Py_XDECREF(fn);
    PyErr_Clear();
    if (!r->sr->headers_sent) {
        if (r->so->srv->cfg.expose_tracebacks) {
            PyObject *trace = PyException_GetTraceback(exc);
            PyObject *tb = PyObject_CallFunctionObjArgs(
                r->so->format_exc, (PyObject *)Py_TYPE(exc), exc,
                trace ? trace : Py_None, NULL);
            Py_XDECREF(trace);
            PyObject *txt = NULL;
            if (tb) {
                PyObject *sep = PyUnicode_FromString("");
                txt = sep ? PyUnicode_Join(sep, tb) : NULL;
                Py_XDECREF(sep);
            }
            Py_ssize_t n = 0;
            const char *d = txt ? PyUnicode_AsUTF8AndSize(txt, &n) : NULL;
            if (d == NULL) {
                PyErr_Clear();
                d = "The server encountered an unexpected internal server "
                    "error";
                n = (Py_ssize_t)strlen(d);
            }
            wc_wsgi_error_response(r->w, r->ch, r->version, 500, d,
                                   (size_t)n);
            Py_XDECREF(tb);
            Py_XDECREF(txt);
        } else {
            static const char d[] = "The server encountered an unexpected "
                                    "internal server error";
            wc_wsgi_error_response(r->w, r->ch, r->version, 500, d,
                                   sizeof(d) - 1);
        }
    }
    Py_DECREF(exc);
}

/* New reference: the filelike of a FileWrapper result, else NULL (no
 * exception). */
static PyObject *
wrapped_file(response_t *r, PyObject *result)
{
    if (Py_TYPE(result) != (PyTypeObject *)r->so->file_wrapper)
        return NULL;
    PyObject *f = ((FileWrapperObject *)result)->filelike;
    return f ? Py_NewRef(f) : NULL;
}

/* Call f.name(*args) expecting an int; -1 (no exception) on any failure. */
static long long
call_int(PyObject *f, const char *name, const char *fmt, long long a,
         long long b)
{
    PyObject *v = fmt ? PyObject_CallMethod(f, name, fmt, a, b)
                      : PyObject_CallMethod(f, name, NULL);
    if (v == NULL) {
        PyErr_Clear();
        return -1;
    }
    long long x = PyLong_Check(v) ? PyLong_AsLongLong(v) : -1;
    Py_DECREF(v);
    if (x == -1)
        PyErr_Clear();
    return x;
}

/* A FileWrapper over a regular file: sendfile it.  Returns 1 and fills
 * fd/offset/size, 0 if not, never raises. */
static int
sendfile_source(PyObject *f, int *fd, off_t *off, uint64_t *size)
{
    long long fileno = call_int(f, "fileno", NULL, 0, 0);
    if (fileno < 0)
        return 0;
    long long p = call_int(f, "tell", NULL, 0, 0);
    struct stat st;
    if (p < 0 || fstat((int)fileno, &st) < 0 || !S_ISREG(st.st_mode)
        || st.st_size <= p)
        return 0;
    *fd = (int)fileno;
    *off = (off_t)p;
    *size = (uint64_t)(st.st_size - p);
    return 1;
}

/* A seekable file-like without a file descriptor: its remaining size from
 * seek/tell, or 0 when unknown or empty.  Never raises. */
static uint64_t
seekable_size(PyObject *f)
{
    if (!wc_filelike_seekable(f))
        return 0;
    long long pos = call_int(f, "tell", NULL, 0, 0);
    if (pos < 0 || call_int(f, "seek", "LL", 0, 2) < 0)
        return 0;
    long long end = call_int(f, "tell", NULL, 0, 0);
    if (call_int(f, "seek", "LL", pos, 0) < 0 || end <= pos)
        return 0;
    return (uint64_t)(end - pos);
}

/* waitress's sizing of a file response: no app Content-Length -> the file
 * size; too long -> replaced by the real size; too short -> exactly CL
 * bytes.  Returns the bytes to send, or -1 with an exception. */
static int64_t
file_length(response_t *r, uint64_t size)
{
    StartResponseObject *sr = r->sr;
    if (sr->content_length >= 0 && (uint64_t)sr->content_length < size)
        return sr->content_length;
    if (sr->content_length >= 0) {
        Py_ssize_t n = PyList_GET_SIZE(sr->headers);
        for (Py_ssize_t i = n - 1; i >= 0; i--) {
            PyObject *t = PyList_GET_ITEM(sr->headers, i);
            if (WC_IEQ(PyTuple_GET_ITEM(t, 0), "content-length")
                && PyList_SetSlice(sr->headers, i, i + 1, NULL) < 0)
                return -1;
        }
        sr->content_length = -1;
    }
    return (int64_t)size;
}

static int
send_file(response_t *r, int fd, off_t off, uint64_t size)
{
    int64_t n = file_length(r, size);
    if (n < 0 || build_head(r, n) < 0 || flush(r) < 0)
        return -1;
    if (!r->has_body || r->is_head)
        return 0;
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (wc_channel_send_file(r->ch, dfd, off, (uint64_t)n, 1) < 0) {
        r->failed = 1;
        return -1;
    }
    r->sent = (uint64_t)n;
    return 0;
}

/* Read the wrapper's blocks up to `left` bytes and send them. */
static int
send_blocks(response_t *r, PyObject *result, uint64_t left)
{
    PyObject *item;
    while (left > 0 && (item = PyIter_Next(result)) != NULL) {
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "response body items must be "
                         "bytes, not %.80s", Py_TYPE(item)->tp_name);
            Py_DECREF(item);
            return -1;
        }
        size_t n = (size_t)PyBytes_GET_SIZE(item);
        if (n > left)
            n = (size_t)left;
        left -= n;
        int rv = add_body(r, PyBytes_AS_STRING(item), n);
        if (rv == 0)
            rv = flush_more(r, 1);
        Py_DECREF(item);
        if (rv < 0)
            return -1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* The app returned a FileWrapper before sending anything: size it, and
 * sendfile it when it is a regular file.  Returns 1 when done, 0 to fall
 * back to plain iteration, -1 on error. */
static int
send_wrapper(response_t *r, PyObject *result)
{
    PyObject *f = wrapped_file(r, result);
    int fd, rv = 0;
    off_t off;
    uint64_t size;
    if (f == NULL)
        return 0;
    if (sendfile_source(f, &fd, &off, &size)) {
        rv = send_file(r, fd, off, size) < 0 ? -1 : 1;
    } else if ((size = seekable_size(f)) > 0) {
        int64_t n = file_length(r, size);
        if (n < 0 || build_head(r, n) < 0 || flush(r) < 0)
            rv = -1;
        else
            rv = send_blocks(r, result, (uint64_t)n) < 0 ? -1 : 1;
    }
    Py_DECREF(f);
    return rv;
}

/* Iterate the app's result and send it.  Returns -1 with an exception set
 * (or r->failed set). */
static int
send_result(response_t *r, PyObject *result)
{
    StartResponseObject *sr = r->sr;

    if (sr->called && !sr->headers_sent) {
        int s = send_wrapper(r, result);
        if (s != 0)
            return s < 0 ? -1 : 0;
    }
    if ((PyList_CheckExact(result) || PyTuple_CheckExact(result))
        && sr->called) {
        /* All the bytes are here: one Content-Length, one sendmsg. */
        PyObject **items = PySequence_Fast_ITEMS(result);
        Py_ssize_t n = PySequence_Fast_GET_SIZE(result);
        int64_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!PyBytes_Check(items[i])) {
                PyErr_Format(PyExc_TypeError, "response body items must be "
                             "bytes, not %.80s", Py_TYPE(items[i])->tp_name);
                return -1;
            }
            total += PyBytes_GET_SIZE(items[i]);
        }
        if (!sr->headers_sent && build_head(r, total) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (add_body(r, PyBytes_AS_STRING(items[i]),
                         (size_t)PyBytes_GET_SIZE(items[i])) < 0)
                return -1;
        }
        /* A whole response: it may wait for the next pipelined one. */
        return flush_more(r, r->w->more);
    }
    PyObject *it = PyObject_GetIter(result);
    if (it == NULL)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "response body items must be "
                         "bytes, not %.80s", Py_TYPE(item)->tp_name);
            Py_DECREF(item);
            Py_DECREF(it);
            return -1;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(item);
        if (n == 0) {
            Py_DECREF(item);
            continue;
        }
        if (!sr->called) {
            Py_DECREF(item);
            Py_DECREF(it);
            PyErr_SetString(PyExc_RuntimeError, "start_response was not "
                            "called before body written");
            return -1;
        }
        if (!sr->headers_sent && build_head(r, -1) < 0) {
            Py_DECREF(item);
            Py_DECREF(it);
            return -1;
        }
        /* Blocks may be held back briefly (at most a loop tick, about a
         * millisecond) and leave together: channel.c, defer. */
        int rv = add_body(r, PyBytes_AS_STRING(item), (size_t)n);
        if (rv == 0)
            rv = flush_more(r, 1);
        Py_DECREF(item);
        if (rv < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    return 0;
}

/* Finish the message: the last chunk, or the check on Content-Length. */
static int
finish(response_t *r, int *close)
{
    StartResponseObject *sr = r->sr;
    if (!sr->called) {
        PyErr_SetString(PyExc_RuntimeError, "start_response was not called");
        return -1;
    }
    if (!sr->headers_sent) {
        /* No body at all: its length is known, 0. */
        if (build_head(r, 0) < 0)
            return -1;
    }
    if (r->chunked) {
        if (r->niov + 1 > WC_IOV_MAX && flush(r) < 0)
            return -1;
        r->iov[r->niov].iov_base = (void *)"0\r\n\r\n";
        r->iov[r->niov++].iov_len = 5;
    }
    if (flush_more(r, r->w->more) < 0)
        return -1;
    if (r->cl >= 0 && r->sent < (uint64_t)r->cl && r->has_body
        && !r->is_head) {
        PyObject *args = Py_BuildValue("(sKL)", "application returned too "
                                       "few bytes (%s) for specified "
                                       "Content-Length (%s) via app_iter",
                                       (unsigned long long)r->sent,
                                       (long long)r->cl);
        PyObject *fn = PyObject_GetAttrString(r->so->logger, "warning");
        PyObject *res = (args && fn) ? PyObject_Call(fn, args, NULL) : NULL;
        Py_XDECREF(res);
        Py_XDECREF(fn);
        Py_XDECREF(args);
        PyErr_Clear();
        *close = 1;
    }
    if (!r->keep_alive)
        *close = 1;
    return 0;
}

static int
call_close(PyObject *result)
{
    PyObject *meth = PyObject_GetAttrString(result, "close");
    if (meth == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    PyObject *res = PyObject_CallNoArgs(meth);
    Py_DECREF(meth);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* New reference: a StartResponse for one request, the worker's spare one
 * when it has it. */
static StartResponseObject *
take_sr(wc_worker_t *w, ServerObject *so)
{
    StartResponseObject *sr = (StartResponseObject *)w->spare_sr;
    w->spare_sr = NULL;
    if (sr == NULL) {
        sr = PyObject_New(StartResponseObject, (PyTypeObject *)so->sr_type);
        if (sr == NULL)
            return NULL;
        sr->write = NULL;
    }
    sr->status = NULL;
    sr->headers = NULL;
    return sr;
}

/* Steals sr.  Keep it (and its cached write) for the next request if the
 * app kept neither; else break the sr <-> write cycle and let it go. */
static void
release_sr(wc_worker_t *w, StartResponseObject *sr)
{
    sr->active = 0;
    sr->resp = NULL;
    sr->ch = NULL;
    sr->req = NULL;
    sr->w = NULL;
    Py_CLEAR(sr->status);
    Py_CLEAR(sr->headers);
    Py_ssize_t mine = sr->write ? 2 : 1;
    if (w->spare_sr == NULL && Py_REFCNT(sr) == mine
        && (sr->write == NULL || Py_REFCNT(sr->write) == 1)) {
        w->spare_sr = (PyObject *)sr;
        return;
    }
    Py_CLEAR(sr->write);
    Py_DECREF(sr);
}

void
wc_wsgi_worker_done(wc_worker_t *w)
{
    StartResponseObject *sr = (StartResponseObject *)w->spare_sr;
    w->spare_sr = NULL;
    if (sr) {
        Py_CLEAR(sr->write);
        Py_DECREF(sr);
    }
}

void
wc_wsgi_serve(wc_worker_t *w, wc_channel_t *ch, wc_request_t *req,
              int *close)
{
    ServerObject *so = (ServerObject *)w->server;
    response_t r;
    PyObject *env = NULL, *result = NULL;
    StartResponseObject *sr = NULL;

    memset(&r, 0, sizeof(r));
    r.w = w;
    r.ch = ch;
    r.so = so;
    r.version = req->version;
    r.is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    r.req_keep_alive = req->keep_alive && !req->close_after;
    r.cl = -1;
    *close = 0;

    env = build_environ(so, ch, req, &r.path);
    if (env == NULL)
        goto failed;
    sr = take_sr(w, so);
    if (sr == NULL)
        goto failed;
    sr->content_length = -1;
    sr->called = sr->headers_sent = sr->has_server = sr->has_date = 0;
    sr->active = 1;
    sr->w = w;
    sr->ch = ch;
    sr->req = req;
    sr->resp = &r;
    r.sr = sr;

    PyObject *args[2] = {env, (PyObject *)sr};
    result = PyObject_Vectorcall(so->app, args, 2, NULL);
    if (result == NULL)
        goto failed;
    if (send_result(&r, result) < 0)
        goto failed;
    end_writes(&r);
    if (finish(&r, close) < 0)
        goto failed;
    goto done;

failed:
    if (PyErr_Occurred()) {
        /* Keep the exception while writers in flight are waited for. */
        PyObject *exc = fetch_exc();
        end_writes(&r);
        if (exc)
            restore_exc(exc);
    } else {
        end_writes(&r);
    }
    if (sr == NULL || env == NULL) {
        /* Could not even build the request: a server-side 500. */
        r.sr = sr;
        if (sr == NULL) {
            PyObject *exc = fetch_exc();
            PyObject *res = PyObject_CallMethod(so->logger, "error", "sO",
                                                "Exception while preparing "
                                                "%s", exc ? exc : Py_None);
            Py_XDECREF(res);
            Py_XDECREF(exc);
            PyErr_Clear();
            static const char d[] = "The server encountered an unexpected "
                                    "internal server error";
            wc_wsgi_error_response(w, ch, r.version, 500, d, sizeof(d) - 1);
            *close = 1;
            goto done;
        }
    }
    app_failed(&r, close);

done:
    if (result != NULL && call_close(result) < 0) {
        PyObject *exc = fetch_exc();
        PyObject *kw = Py_BuildValue("{sO}", "exc_info",
                                     exc ? exc : Py_None);
        PyObject *fn = PyObject_GetAttrString(so->logger, "error");
        PyObject *args = Py_BuildValue("(sO)", "Exception while serving %s",
                                       r.path ? r.path : Py_None);
        PyObject *res = (kw && fn && args) ? PyObject_Call(fn, args, kw)
                                           : NULL;
        Py_XDECREF(res);
        Py_XDECREF(args);
        Py_XDECREF(fn);
        Py_XDECREF(kw);
        Py_XDECREF(exc);
        PyErr_Clear();
        *close = 1;
    }
    Py_XDECREF(result);
    Py_XDECREF(env);
    Py_XDECREF(r.path);
    if (sr)
        release_sr(w, sr);
    w->out.len = 0;
}

/* A server-generated error in waitress's format.  No Python needed. */
void
wc_wsgi_error_response(wc_worker_t *w, wc_channel_t *ch, int version,
                       int status, const char *detail, size_t dlen)
{
    const wc_config_t *cfg = &ch->srv->cfg;
    const char *reason = reason_phrase(status);
    size_t rlen = strlen(reason);
    size_t tlen = strlen(cfg->error_tag);
    size_t blen = rlen + 4 + dlen + 4 + tlen;
    size_t dl;
    const char *date = wc_date(w, &dl);
    wc_buf_t *b = &w->out;
    b->len = 0;
    int rv = wc_buf_appendf(b, "HTTP/1.%d %d %s\r\n"
                               "Content-Length: %zu\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Connection: close\r\n"
                               "Date: %.*s\r\n",
                            version == 11 ? 1 : 0, status, reason, blen,
                            (int)dl, date);
    if (rv == 0 && cfg->ident[0])
        rv = wc_buf_appendf(b, "Server: %s\r\n", cfg->ident);
    if (rv == 0)
        rv = wc_buf_appendf(b, "\r\n%s\r\n\r\n", reason);
    if (rv == 0)
        rv = wc_buf_append(b, detail, dlen);
    if (rv == 0)
        rv = wc_buf_appendf(b, "\r\n\r\n%s", cfg->error_tag);
    if (rv == 0) {
        struct iovec iov = {b->data, b->len};
        if (wc_channel_send(ch, &iov, 1, 0) < 0)
            rv = -1;    /* the client is gone; it is closing anyway */
    }
    b->len = 0;
}
