/* wsgi.c: one request on a worker, the WSGI driver.  Builds the environ
 * (environ.c), calls the application, iterates its result into the
 * response (response.c), maps failures to error responses and logs them,
 * and always calls the result's close().
 *
 * GIL map: worker threads, GIL held throughout, except where response.c
 * parks (GIL released).
 */
#include "response.h"

#include <string.h>

static void log_access(ServerObject *so, PyObject *env, wc_channel_t *ch,
                       wc_request_t *req, int status, uint64_t nbytes,
                       uint64_t t0, PyObject *headers);

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

static PyObject *close_name;    /* "close", interned */

/* New reference: the path for an error line, escaped by the access log's
 * escape() (a client's "/%0A..." is a newline in PATH_INFO, which must
 * not start a line of the log), or None.  Never NULL and never raises:
 * the callers have fetched the exception they log. */
static PyObject *
log_path(ServerObject *so, PyObject *path)
{
    if (path == NULL)
        return Py_NewRef(Py_None);
    PyObject *s = PyObject_CallOneArg(so->log_escape, path);
    if (s == NULL) {
        /* Never the raw path instead. */
        PyErr_Clear();
        return Py_NewRef(Py_None);
    }
    return s;
}

/* "Exception while serving PATH" and exc's traceback, at ERROR. */
static void
log_exception(ServerObject *so, PyObject *path, PyObject *exc)
{
    PyObject *p = log_path(so, path);
    PyObject *kw = Py_BuildValue("{sO}", "exc_info", exc ? exc : Py_None);
    PyObject *fn = PyObject_GetAttrString(so->logger, "error");
    PyObject *args = Py_BuildValue("(sO)", "Exception while serving %s", p);
    PyObject *res = (kw && fn && args) ? PyObject_Call(fn, args, kw) : NULL;
    Py_XDECREF(res);
    Py_XDECREF(args);
    Py_XDECREF(fn);
    Py_XDECREF(kw);
    Py_DECREF(p);
    PyErr_Clear();
}

int
wc_wsgi_init(PyObject *module)
{
    if (close_name == NULL
        && (close_name = PyUnicode_InternFromString("close")) == NULL)
        return -1;
    return wc_environ_init();
}

/* Log an exception from the app and answer it if we still can. */
static void
app_failed(response_t *r, int *close)
{
    PyObject *exc = fetch_exc();
    *close = 1;
    if (r->failed) {
        /* Client gone (a write failed, or the connection timed out while
         * the response waited): not the app's fault. */
        PyObject *p = log_path(r->so, r->path);
        PyObject *res = PyObject_CallMethod(r->so->logger, "info", "sO",
                                            "Client disconnected while "
                                            "serving %s", p);
        Py_XDECREF(res);
        Py_DECREF(p);
        PyErr_Clear();
        Py_XDECREF(exc);
        return;
    }
    if (exc == NULL)
        return;
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
        r->sent = wc_response_error(r->w, r->ch, r->version, 400, d,
                                    (size_t)n);
        r->status = 400;
        Py_XDECREF(s);
        Py_DECREF(exc);
        return;
    }
    log_exception(r->so, r->path, exc);
    if (!r->sr->headers_sent) {
        r->status = 500;
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
            r->sent = wc_response_error(r->w, r->ch, r->version, 500, d,
                                        (size_t)n);
            Py_XDECREF(tb);
            Py_XDECREF(txt);
        } else {
            static const char d[] = "The server encountered an unexpected "
                                    "internal server error";
            r->sent = wc_response_error(r->w, r->ch, r->version, 500, d,
                                        sizeof(d) - 1);
        }
    }
    Py_DECREF(exc);
}

/* The response's C steps run in sr's critical section, as start_response()
 * and write() from the app's threads do (start_response.c): nothing with
 * a GIL, and on a free-threaded build what keeps two threads from
 * building one head, or sharing the worker's scratch buffer and Date
 * cache, at once. */
static int
send_file_locked(response_t *r, PyObject *result)
{
    int s;
    WC_BEGIN_LOCKED((PyObject *)r->sr)
    s = wc_response_file(r, result);
    WC_END_LOCKED()
    return s;
}

/* A whole list or tuple of `n` bytes objects, `total` bytes. */
static int
send_list_locked(response_t *r, PyObject **items, Py_ssize_t n,
                 int64_t total)
{
    int rv = 0;
    WC_BEGIN_LOCKED((PyObject *)r->sr)
    if (!r->sr->headers_sent && wc_response_head(r, total) < 0)
        rv = -1;
    for (Py_ssize_t i = 0; i < n && rv == 0; i++) {
        PyObject *b = items[i];
        if (wc_response_body(r, PyBytes_AS_STRING(b),
                             (size_t)PyBytes_GET_SIZE(b),
                             PyBytes_CheckExact(b) ? b : NULL) < 0)
            rv = -1;
    }
    /* A whole response: it may wait for the next pipelined one. */
    if (rv == 0)
        rv = wc_response_flush(r, r->w->more);
    WC_END_LOCKED()
    return rv;
}

/* One block of an iterated result. */
static int
send_block_locked(response_t *r, PyObject *item)
{
    int rv = 0;
    WC_BEGIN_LOCKED((PyObject *)r->sr)
    if (!r->sr->headers_sent && wc_response_head(r, -1) < 0) {
        rv = -1;
    } else {
        /* Blocks may be held back briefly (at most a loop tick, about a
         * millisecond) and leave together: channel_out.c, defer. */
        rv = wc_response_body(r, PyBytes_AS_STRING(item),
                              (size_t)PyBytes_GET_SIZE(item),
                              PyBytes_CheckExact(item) ? item : NULL);
        if (rv == 0)
            rv = wc_response_flush(r, 1);
    }
    WC_END_LOCKED()
    return rv;
}

/* Iterate the app's result and send it.  Returns -1 with an exception set
 * (or r->failed set). */
static int
send_result(response_t *r, PyObject *result)
{
    StartResponseObject *sr = r->sr;

    if (sr->called && !sr->headers_sent) {
        int s = send_file_locked(r, result);
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
        return send_list_locked(r, items, n, total);
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
        int rv = send_block_locked(r, item);
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

/* PEP 3333: result.close() when it has one.  Looked up without raising:
 * most results (lists) have none, and the AttributeError with its
 * formatted message cost 1.5% of a small request's CPU. */
static int
call_close(PyObject *result)
{
    PyObject *meth;
    if (PyList_CheckExact(result) || PyTuple_CheckExact(result))
        return 0;
    int found = WC_GETATTR_OPT(result, close_name, &meth);
    if (found <= 0)
        return found;
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
        wc_start_response_init(sr);
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
    /* Reused only if nobody else holds it: the app may keep start_response
     * or write() (and another thread call them later).  A cached write()
     * holds a reference to sr, so sr's count is 2 then; with the GIL the
     * count says so.  A free-threaded build has no exact "count == 2" test
     * (docs/design.rst, free threading): the cached write() is let go
     * first, and sr must then be referenced by this thread alone. */
    if (w->spare_sr == NULL
        && (sr->write == NULL || wc_sole_ref(sr->write))) {
#ifdef Py_GIL_DISABLED
        Py_CLEAR(sr->write);
        int sole = wc_sole_ref((PyObject *)sr);
#else
        int sole = Py_REFCNT(sr) == (sr->write ? 2 : 1);
#endif
        if (sole) {
            w->spare_sr = (PyObject *)sr;
            return;
        }
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

    uint64_t t0 = so->access_log ? uv_hrtime() : 0;
    /* The StartResponse first: the environ holds its early_hints. */
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
    env = wc_environ_build(so, ch, req, sr, &r.path);
    if (env == NULL)
        goto failed;

    PyObject *args[2] = {env, (PyObject *)sr};
    result = PyObject_Vectorcall(so->app, args, 2, NULL);
    if (result == NULL)
        goto failed;
    if (send_result(&r, result) < 0)
        goto failed;
    wc_response_end_writes(&r);
    if (wc_response_finish(&r, close) < 0)
        goto failed;
    goto done;

failed:
    if (PyErr_Occurred()) {
        /* Keep the exception while writers in flight are waited for. */
        PyObject *exc = fetch_exc();
        wc_response_end_writes(&r);
        if (exc)
            restore_exc(exc);
    } else {
        wc_response_end_writes(&r);
    }
    if (env == NULL) {
        /* Could not even build the request: a server-side 500. */
        PyObject *exc = fetch_exc();
        PyObject *res = PyObject_CallMethod(so->logger, "error", "sO",
                                            "Exception while preparing %s",
                                            exc ? exc : Py_None);
        Py_XDECREF(res);
        Py_XDECREF(exc);
        PyErr_Clear();
        static const char d[] = "The server encountered an unexpected "
                                "internal server error";
        r.sent = wc_response_error(w, ch, r.version, 500, d, sizeof(d) - 1);
        r.status = 500;
        *close = 1;
        goto done;
    }
    app_failed(&r, close);

done:
    if (result != NULL && call_close(result) < 0) {
        PyObject *exc = fetch_exc();
        log_exception(so, r.path, exc);
        Py_XDECREF(exc);
        *close = 1;
    }
    wc_metrics_request(so->srv->m, req, r.status);
    if (so->access_log)
        log_access(so, env, ch, req, r.status,
                   wc_response_taken(&r), t0,
                   sr ? sr->headers : NULL);
    Py_XDECREF(result);
    Py_XDECREF(env);
    Py_XDECREF(r.path);
    if (sr)
        release_sr(w, sr);
    w->out.len = 0;
}

/* New reference: str of the bytes, or None when there are none. */
static PyObject *
str_or_none(const char *p, size_t n)
{
    if (p == NULL)
        return Py_NewRef(Py_None);
    return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

/* Hand one response's facts to the access log (waitress_c/access_log.py
 * formats them).  `env` and `headers` may be NULL.  Never raises: a
 * failing access log is reported, not the request's problem. */
static void
log_access(ServerObject *so, PyObject *env, wc_channel_t *ch,
           wc_request_t *req, int status, uint64_t nbytes, uint64_t t0,
           PyObject *headers)
{
    uint64_t micros = (uv_hrtime() - t0) / 1000;
    PyObject *peer = env ? Py_NewRef(Py_None) : wc_environ_peer(ch);
    PyObject *method = str_or_none(req->method, req->method_len);
    PyObject *target = str_or_none(req->target, req->target_len);
    PyObject *proto = req->version == 11 ? PyUnicode_FromString("HTTP/1.1")
                      : req->version == 10 ? PyUnicode_FromString("HTTP/1.0")
                      : req->version == 20 ? PyUnicode_FromString("HTTP/2.0")
                                           : Py_NewRef(Py_None);
    PyObject *res = NULL;
    if (peer && method && target && proto)
        res = PyObject_CallFunction(so->access_log, "OOOOOiKKO",
                                    env ? env : Py_None, peer, method,
                                    target, proto, status,
                                    (unsigned long long)nbytes,
                                    (unsigned long long)micros,
                                    headers ? headers : Py_None);
    if (res == NULL)
        PyErr_WriteUnraisable(so->access_log);
    Py_XDECREF(res);
    Py_XDECREF(peer);
    Py_XDECREF(method);
    Py_XDECREF(target);
    Py_XDECREF(proto);
}

void
wc_wsgi_log_error(wc_worker_t *w, wc_channel_t *ch, wc_request_t *req,
                  int status, uint64_t nbytes)
{
    ServerObject *so = (ServerObject *)w->server;
    log_access(so, NULL, ch, req, status, nbytes, uv_hrtime(), NULL);
}
