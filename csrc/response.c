/* response.c: HTTP/1 framing of a response, the one place that decides
 * its keep-alive.  Status line and headers (Content-Length, chunked or
 * close-delimited; Connection; Date and Server), the body gathered into
 * iovecs and handed to the channel, file bodies (sendfile for regular
 * files, sized reads for other seekable file-likes), waitress's error
 * pages, and write() for the app's threads.
 *
 * GIL map: worker threads and app threads in write(), GIL held, except
 * while parked on a full output queue or waiting for app threads still in
 * write() (GIL released).
 */
#include "response.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

static void
warn(response_t *r, const char *fmt, PyObject *arg)
{
    PyObject *res = PyObject_CallMethod(r->so->logger, "warning", "sO", fmt,
                                        arg);
    if (res == NULL)
        PyErr_Clear();
    Py_XDECREF(res);
}

/* Gather one iovec; owner: the exact bytes object p points into, or NULL
 * (wc_channel_send may then queue it by reference). */
static inline void
add_iov(response_t *r, const void *p, size_t n, PyObject *owner)
{
    r->iov[r->niov].iov_base = (void *)p;
    r->iov[r->niov].iov_len = n;
    r->owners[r->niov++] = owner;
}

/* HTTP/2 (RFC 9113 8.2.2): fields an HTTP/2 message must not carry. */
static int
connection_specific(PyObject *name)
{
    return WC_IEQ(name, "connection") || WC_IEQ(name, "keep-alive")
           || WC_IEQ(name, "proxy-connection")
           || WC_IEQ(name, "transfer-encoding") || WC_IEQ(name, "upgrade");
}

/* Append a packed field for h2.c: the name in lower case, NUL, the value,
 * NUL.  Returns -1 with an exception set. */
static int
put_field(wc_buf_t *b, PyObject *name, PyObject *value)
{
    size_t at = b->len;
    if (put_str(b, name) < 0)
        return -1;
    for (size_t i = at; i < b->len; i++) {
        char c = b->data[i];
        if (c >= 'A' && c <= 'Z')
            b->data[i] = (char)(c + 32);
    }
    if (wc_buf_append(b, "", 1) < 0)
        goto nomem;
    at = b->len;
    if (put_str(b, value) < 0)
        return -1;
    if (memchr(b->data + at, '\0', b->len - at) != NULL) {
        PyErr_SetString(PyExc_ValueError, "NUL in a header value");
        return -1;
    }
    if (wc_buf_append(b, "", 1) < 0)
        goto nomem;
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

static int
put_field_c(wc_buf_t *b, const char *name, const char *value, size_t vlen)
{
    if (wc_buf_append(b, name, strlen(name) + 1) < 0
        || wc_buf_append(b, value, vlen) < 0 || wc_buf_append(b, "", 1) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The head of a response on an HTTP/2 stream: no framing of ours (DATA
 * frames and END_STREAM are the framing), no Connection: the fields go
 * packed to the loop (h2.c), which sends them as HEADERS.  A Content-
 * Length is still given when known, as for HTTP/1. */
static int
h2_head(response_t *r, int64_t known_len)
{
    StartResponseObject *sr = r->sr;
    wc_buf_t *b = &r->w->out;
    wc_config_t *cfg = &r->so->srv->cfg;
    int code = status_code(sr->status);
    r->status = code;
    r->has_body = !((code >= 100 && code < 200) || code == 204
                    || code == 304);
    r->keep_alive = 1;
    r->chunked = 0;
    r->cl = -1;
    int app_cl = sr->content_length >= 0;
    if (!r->has_body)
        ;
    else if (app_cl)
        r->cl = sr->content_length;
    else if (known_len > 0 || (known_len == 0 && !r->is_head))
        r->cl = known_len;
    b->len = 0;
    if (wc_buf_appendf(b, "%03d", code % 1000) < 0)
        goto nomem;
    Py_ssize_t nh = PyList_GET_SIZE(sr->headers);
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *t = PyList_GET_ITEM(sr->headers, i);
        PyObject *name = PyTuple_GET_ITEM(t, 0);
        if ((!r->has_body && WC_IEQ(name, "content-length"))
            || connection_specific(name))
            continue;
        if (put_field(b, name, PyTuple_GET_ITEM(t, 1)) < 0)
            return -1;
    }
    if (r->has_body && !app_cl && r->cl >= 0) {
        char num[24];
        size_t k = wc_fmt_u64(num, (uint64_t)r->cl);
        if (put_field_c(b, "content-length", num, k) < 0)
            return -1;
    }
    if (!sr->has_date) {
        size_t dlen;
        const char *d = wc_date(r->w, &dlen);
        if (put_field_c(b, "date", d, dlen) < 0)
            return -1;
    }
    const char *ident = cfg->ident[0] ? cfg->ident : NULL;
    if (sr->has_server) {
        const char *via = ident ? ident : "waitress_c";
        if (put_field_c(b, "via", via, strlen(via)) < 0)
            return -1;
    } else if (ident && put_field_c(b, "server", ident, strlen(ident)) < 0) {
        return -1;
    }
    sr->headers_sent = 1;
    r->niov = 0;
    r->nhex = 0;
    if (wc_h2_stream_head(r->ch, b->data, b->len,
                          !r->has_body || r->is_head) < 0)
        r->failed = 1;  /* the stream is gone: the next flush says so */
    b->len = 0;
    return 0;

nomem:
    PyErr_NoMemory();
    return -1;
}

/* Decide the framing and write the status line and headers into w->out.
 * `known_len` is the whole body's length when the server knows it (-1
 * otherwise).  Returns -1 with an exception set. */
int
wc_response_head(response_t *r, int64_t known_len)
{
    if (r->version == 20)
        return h2_head(r, known_len);
    StartResponseObject *sr = r->sr;
    wc_buf_t *b = &r->w->out;
    wc_config_t *cfg = &r->so->srv->cfg;
    int code = status_code(sr->status);
    r->status = code;
    int app_cl = sr->content_length >= 0;

    r->has_body = !((code >= 100 && code < 200) || code == 204
                    || code == 304);
    /* The request's own keep-alive, as the connection allows it now (a
     * stopping server closes after its last request), less what the
     * framing forbids below. */
    r->keep_alive = wc_channel_keep_alive(r->ch, r->req_keep_alive);
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
        size_t k = wc_fmt_u64(num, (uint64_t)r->cl);
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
    add_iov(r, b->data, b->len, NULL);
    return 0;

nomem:
    PyErr_NoMemory();
    return -1;
}

/* Send the gathered iovecs.  Parks (GIL released) while the channel holds
 * more than outbuf_high_watermark.  Returns -1 when the client is gone
 * (r->failed set, no exception). */
int
wc_response_flush(response_t *r, int defer)
{
    if (r->niov == 0 || r->failed)
        return r->failed ? -1 : 0;
    int rv = wc_channel_send(r->ch, r->iov, r->owners, r->niov, defer);
    r->niov = 0;
    r->nhex = 0;
    r->w->out.len = 0;
    if (rv < 0) {
        /* Nothing of this batch reached the connection. */
        r->sent -= r->gathered;
        r->gathered = 0;
        r->failed = 1;
        return -1;
    }
    r->gathered = 0;
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

uint64_t
wc_response_taken(response_t *r)
{
    uint64_t lost = wc_channel_unsent(r->ch);
    return r->sent > lost ? r->sent - lost : 0;
}

static int
flush(response_t *r)
{
    return wc_response_flush(r, 0);
}

/* Queue body bytes (the memory must live until the next flush). */
int
wc_response_body(response_t *r, const char *p, size_t n, PyObject *owner)
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
        add_iov(r, h, (size_t)k, NULL);
    }
    add_iov(r, p, n, owner);
    if (r->chunked)
        add_iov(r, "\r\n", 2, NULL);
    r->sent += n;
    r->gathered += n;
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
    if (!sr->headers_sent && wc_response_head(r, -1) < 0)
        rv = -1;
    else if (wc_response_body(r, p, n, NULL) < 0 || flush(r) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_OSError, "Client disconnected");
        rv = -1;
    }
    wc_channel_writer_leave(ch);
    return rv;
}

/* environ["wsgi.early_hints"]: "103 Early Hints" and the app's headers
 * (checked by start_response.c), sent at once.  Only before the final
 * head, so nothing of this response is gathered in w->out.  Counted as a
 * writer, like write(): an app thread may call it. */
int
wc_response_hints(StartResponseObject *sr, PyObject *headers)
{
    response_t *r = sr->resp;
    wc_buf_t *b = &r->w->out;
    int rv = -1;
    if (r->version != 11)
        return 0;   /* RFC 9110 15.2: no 1xx to an HTTP/1.0 client */
    if (r->failed) {
        PyErr_SetString(PyExc_OSError, "Client disconnected");
        return -1;
    }
    wc_channel_writer_enter(sr->ch);
    b->len = 0;
    if (PUT_LIT(b, "HTTP/1.1 103 Early Hints\r\n") < 0)
        goto nomem;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *t = PyList_GET_ITEM(headers, i);     /* borrowed */
        if (put_str(b, PyTuple_GET_ITEM(t, 0)) < 0)
            goto error;
        if (PUT_LIT(b, ": ") < 0)
            goto nomem;
        if (put_str(b, PyTuple_GET_ITEM(t, 1)) < 0)
            goto error;
        if (PUT_LIT(b, "\r\n") < 0)
            goto nomem;
    }
    if (PUT_LIT(b, "\r\n") < 0)
        goto nomem;
    r->niov = 0;
    r->nhex = 0;
    add_iov(r, b->data, b->len, NULL);
    /* Not deferred: the point is that the client has it before the
     * final response is ready.  flush() empties w->out. */
    if (flush(r) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_OSError, "Client disconnected");
    } else {
        rv = 0;
    }
    wc_channel_writer_leave(sr->ch);
    return rv;

nomem:
    PyErr_NoMemory();
error:
    b->len = 0;
    wc_channel_writer_leave(sr->ch);
    return -1;
}

/* The app's part is over: write() raises from now on, and app threads
 * still inside write() are waited for (GIL released). */
void
wc_response_end_writes(response_t *r)
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
    if (n < 0 || wc_response_head(r, n) < 0 || flush(r) < 0)
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
        int rv = wc_response_body(r, PyBytes_AS_STRING(item), n,
                                  PyBytes_CheckExact(item) ? item : NULL);
        if (rv == 0)
            rv = wc_response_flush(r, 1);
        Py_DECREF(item);
        if (rv < 0)
            return -1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* The app returned a FileWrapper before sending anything: size it, and
 * sendfile it when it is a regular file.  Returns 1 when done, 0 to fall
 * back to plain iteration, -1 on error. */
int
wc_response_file(response_t *r, PyObject *result)
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
        if (n < 0 || wc_response_head(r, n) < 0 || flush(r) < 0)
            rv = -1;
        else
            rv = send_blocks(r, result, (uint64_t)n) < 0 ? -1 : 1;
    }
    Py_DECREF(f);
    return rv;
}

/* Finish the message: the last chunk, or the check on Content-Length. */
int
wc_response_finish(response_t *r, int *close)
{
    StartResponseObject *sr = r->sr;
    if (!sr->called) {
        PyErr_SetString(PyExc_RuntimeError, "start_response was not called");
        return -1;
    }
    if (!sr->headers_sent) {
        /* No body at all: its length is known, 0. */
        if (wc_response_head(r, 0) < 0)
            return -1;
    }
    if (r->chunked) {
        if (r->niov + 1 > WC_IOV_MAX && flush(r) < 0)
            return -1;
        add_iov(r, "0\r\n\r\n", 5, NULL);
    }
    if (wc_response_flush(r, r->w->more) < 0)
        return -1;
    if (r->cl >= 0 && r->sent < (uint64_t)r->cl && r->has_body
        && !r->is_head) {
        r->keep_alive = 0;  /* HTTP/2: a reset; HTTP/1: a close */
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
    else if (r->version == 20)
        wc_h2_stream_complete(r->ch);   /* END_STREAM, not a reset */
    return 0;
}

/* wc_response_error on an HTTP/2 stream: the same page, as HEADERS and
 * DATA.  No Python needed. */
static uint64_t
h2_error(wc_worker_t *w, wc_channel_t *ch, int status, const char *reason,
         size_t blen, const char *detail, size_t dlen)
{
    const wc_config_t *cfg = &ch->srv->cfg;
    wc_buf_t *b = &w->out;
    size_t dl;
    const char *date = wc_date(w, &dl);
    int rv = wc_buf_appendf(b, "%03d", status % 1000);
    char num[24];
    size_t k = wc_fmt_u64(num, blen);
    if (rv == 0)
        rv = wc_buf_append(b, "content-length", 15);
    if (rv == 0)
        rv = wc_buf_append(b, num, k);
    if (rv == 0)
        rv = PUT_LIT(b, "\0content-type\0text/plain; charset=utf-8\0date");
    if (rv == 0)
        rv = wc_buf_append(b, "", 1);
    if (rv == 0)
        rv = wc_buf_append(b, date, dl);
    if (rv == 0)
        rv = wc_buf_append(b, "", 1);
    if (rv == 0 && cfg->ident[0]) {
        rv = wc_buf_append(b, "server", 7);
        if (rv == 0)
            rv = wc_buf_append(b, cfg->ident, strlen(cfg->ident) + 1);
    }
    size_t head_len = b->len;
    if (rv == 0)
        rv = wc_buf_appendf(b, "%s\r\n\r\n", reason);
    if (rv == 0)
        rv = wc_buf_append(b, detail, dlen);
    if (rv == 0)
        rv = wc_buf_appendf(b, "\r\n\r\n%s", cfg->error_tag);
    if (rv == 0)
        rv = wc_h2_stream_head(ch, b->data, head_len, 0);
    if (rv == 0) {
        struct iovec iov = {b->data + head_len, b->len - head_len};
        if (wc_channel_send(ch, &iov, NULL, 1, 0) < 0)
            rv = -1;
    }
    if (rv == 0)
        wc_h2_stream_complete(ch);
    b->len = 0;
    return rv == 0 ? blen : 0;
}

/* A server-generated error in waitress's format.  No Python needed.
 * Returns the body bytes sent (0 when the client is gone). */
uint64_t
wc_response_error(wc_worker_t *w, wc_channel_t *ch, int version,
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
    if (ch->kind == WC_KIND_STREAM)
        return h2_error(w, ch, status, reason, blen, detail, dlen);
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
        if (wc_channel_send(ch, &iov, NULL, 1, 0) < 0)
            rv = -1;    /* the client is gone; it is closing anyway */
    }
    b->len = 0;
    return rv == 0 ? blen : 0;
}
