/* module.c: the waitress_c._core module (multi-phase init, PEP 489) and
 * its Server type, the small C surface the Python package drives:
 *
 *     srv = Server(app, listeners, adj, drop_proxy_headers=False,
 *                  access_log=None, metrics=None, metrics_slot=0)
 *         # listeners: (fd, is_unix, port[, owned[, plain]]) each; plain:
 *         # plain HTTP although adj has a certfile (insecure_listen)
 *     srv.worker()      # in each worker thread: serves until stopped
 *     srv.run(sigfd)    # in the serving thread: the loop, GIL released
 *     srv.close(why)    # any thread: graceful stop (twice: immediate);
 *                       # why (optional) is the cause the stop line names
 *
 * GIL map: every function here holds the GIL, except the body of run(),
 * which releases it for the whole life of the loop, and worker(), which
 * holds it only while serving (dispatch.c).
 */
#include "wc.h"

#include <limits.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    PyObject *server_type;
    PyObject *sr_type;
    PyObject *hints_type;
    PyObject *input_type;
    PyObject *filewrapper_type;
    PyObject *disc_type;
    PyObject *bad_request;
    PyObject *io_open;
    PyObject *format_exc;
} module_state;

static module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

static struct PyModuleDef core_module;

/* ---- configuration ------------------------------------------------------ */

static int
get_int(PyObject *adj, const char *name, long long min, long long *out)
{
    PyObject *v = PyObject_GetAttrString(adj, name);
    if (v == NULL)
        return -1;
    long long x = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (x < min) {
        PyErr_Format(PyExc_ValueError, "%s must be at least %lld", name,
                     min);
        return -1;
    }
    *out = x;
    return 0;
}

static int
get_bool(PyObject *adj, const char *name, int *out)
{
    PyObject *v = PyObject_GetAttrString(adj, name);
    if (v == NULL)
        return -1;
    int b = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (b < 0)
        return -1;
    *out = b;
    return 0;
}

/* New reference: adj.<name> as a str ("" for None). */
static PyObject *
get_str(PyObject *adj, const char *name)
{
    PyObject *v = PyObject_GetAttrString(adj, name);
    if (v == NULL)
        return NULL;
    if (v == Py_None) {
        Py_DECREF(v);
        return PyUnicode_FromString("");
    }
    if (!PyUnicode_Check(v)) {
        PyObject *s = PyObject_Str(v);
        Py_DECREF(v);
        return s;
    }
    return v;
}

/* The directory for spooled bodies and spilled output: where waitress's
 * tempfile.TemporaryFile() would go (TMPDIR, TEMP, TMP, then /tmp...),
 * decided once here, under the GIL, so the loop never reads the
 * environment while the app may change it. */
static int
read_tmpdir(wc_config_t *cfg)
{
    int rv = -1;
    PyObject *tf = PyImport_ImportModule("tempfile");
    PyObject *dir = tf ? PyObject_CallMethod(tf, "gettempdir", NULL) : NULL;
    PyObject *b = dir ? PyUnicode_EncodeFSDefault(dir) : NULL;
    if (b == NULL)
        goto done;
    if ((size_t)PyBytes_GET_SIZE(b) >= sizeof(cfg->tmpdir)
        || strlen(PyBytes_AS_STRING(b)) != (size_t)PyBytes_GET_SIZE(b)) {
        PyErr_Format(PyExc_ValueError, "unusable temp directory %R", dir);
        goto done;
    }
    memcpy(cfg->tmpdir, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b) + 1);
    rv = 0;
done:
    Py_XDECREF(b);
    Py_XDECREF(dir);
    Py_XDECREF(tf);
    return rv;
}

static int
read_config(wc_config_t *cfg, PyObject *adj)
{
    long long v;
#define INT(name, min, field)                      \
    do {                                           \
        if (get_int(adj, name, min, &v) < 0)       \
            return -1;                             \
        cfg->field = v;                            \
    } while (0)
    INT("threads", 1, threads);
    INT("backlog", 1, backlog);
    INT("recv_bytes", 1, recv_bytes);
    INT("connection_limit", 1, connection_limit);
    INT("channel_timeout", 0, channel_timeout_ms);
    cfg->channel_timeout_ms *= 1000;
    INT("cleanup_interval", 0, cleanup_interval_ms);
    cfg->cleanup_interval_ms *= 1000;
    if (cfg->cleanup_interval_ms == 0)
        cfg->cleanup_interval_ms = 1000;
    INT("max_request_header_size", 1, max_header);
    INT("max_request_body_size", 1, max_body);
    INT("inbuf_overflow", 0, inbuf_overflow);
    INT("outbuf_overflow", 0, outbuf_overflow);
    INT("outbuf_high_watermark", 1, outbuf_high_watermark);
    INT("channel_request_lookahead", 0, lookahead);
    INT("h2_max_concurrent_streams", 1, h2_max_streams);
    INT("h2_initial_window_size", 65535, h2_window);
    INT("h2_max_frame_size", 16384, h2_frame);
    INT("h2_max_header_list_size", 1, h2_header_list);
#undef INT
    if (get_bool(adj, "http2", &cfg->http2) < 0)
        return -1;
    /* RFC 9113 6.5.2's bounds. */
    if (cfg->h2_window > 2147483647u || cfg->h2_frame > 16777215u) {
        PyErr_SetString(PyExc_ValueError, "h2_initial_window_size must be "
                        "at most 2147483647 and h2_max_frame_size at most "
                        "16777215");
        return -1;
    }
    PyObject *st = PyObject_GetAttrString(adj, "shutdown_timeout");
    if (st == NULL)
        return -1;
    double sec = PyFloat_AsDouble(st);
    Py_DECREF(st);
    if (sec == -1.0 && PyErr_Occurred())
        return -1;
    if (!(sec >= 0.0 && sec < 1e9)) {
        PyErr_SetString(PyExc_ValueError, "shutdown_timeout must be a "
                        "number of seconds >= 0");
        return -1;
    }
    cfg->shutdown_timeout_ms = (uint64_t)(sec * 1000.0 + 0.5);
    if (get_bool(adj, "expose_tracebacks", &cfg->expose_tracebacks) < 0
        || get_bool(adj, "log_socket_errors", &cfg->log_socket_errors) < 0)
        return -1;
    PyObject *ident = get_str(adj, "ident");
    if (ident == NULL)
        return -1;
    const char *s = PyUnicode_AsUTF8(ident);
    if (s == NULL || strlen(s) >= sizeof(cfg->ident)
        || strpbrk(s, "\r\n")) {
        Py_DECREF(ident);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "ident is too long or holds "
                            "CR/LF");
        return -1;
    }
    strcpy(cfg->ident, s);
    if (s[0])
        cfg->server_line_len = (size_t)snprintf(
            cfg->server_line, sizeof(cfg->server_line), "Server: %s\r\n", s);
    snprintf(cfg->error_tag, sizeof(cfg->error_tag), "(generated by %s)",
             s[0] ? s : "server");
    Py_DECREF(ident);
    return read_tmpdir(cfg);
}

/* ---- TLS ------------------------------------------------------------------ */

/* adj's TLS settings as a context for the loop (tls.c), in *out; NULL
 * when certfile is not set (or adj has no such setting).  Returns 0, or
 * -1 with ValueError set: one line saying what is wrong (a missing or
 * unreadable file, a key that does not match, a wrong password...).  A
 * certificate that has expired or is not valid yet is a UserWarning. */
static int
read_tls(PyObject *adj, wc_tls_t **out)
{
    int rv = -1;
    PyObject *cert = NULL, *key = NULL, *ca = NULL, *ciphers = NULL;
    PyObject *reqs = NULL, *minv = NULL, *pw = NULL, *sni = NULL;
    const char **sni_files = NULL;
    *out = NULL;
    cert = PyObject_GetAttrString(adj, "certfile");
    if (cert == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();      /* settings of a kind without TLS */
        rv = 0;
        goto done;
    }
    if (cert == NULL)
        goto done;
    if (cert == Py_None) {
        rv = 0;
        goto done;
    }
    Py_SETREF(cert, PyObject_Str(cert));
    if (cert == NULL || (key = get_str(adj, "keyfile")) == NULL
        || (ca = get_str(adj, "ca_certs")) == NULL
        || (ciphers = get_str(adj, "ciphers")) == NULL
        || (reqs = get_str(adj, "cert_reqs")) == NULL
        || (minv = get_str(adj, "tls_min_version")) == NULL
        || (pw = PyObject_CallMethod(adj, "tls_password", NULL)) == NULL)
        goto done;
    if (pw != Py_None && !PyUnicode_Check(pw)) {
        PyErr_SetString(PyExc_TypeError, "tls_password() must give a str");
        goto done;
    }
    wc_tls_opts_t o = {0};
    o.certfile = PyUnicode_AsUTF8(cert);
    o.keyfile = PyUnicode_GET_LENGTH(key) ? PyUnicode_AsUTF8(key) : o.certfile;
    o.ca_certs = PyUnicode_GET_LENGTH(ca) ? PyUnicode_AsUTF8(ca) : NULL;
    o.ciphers = PyUnicode_GET_LENGTH(ciphers) ? PyUnicode_AsUTF8(ciphers)
                                             : NULL;
    o.password = pw != Py_None ? PyUnicode_AsUTF8(pw) : NULL;
    const char *r = PyUnicode_AsUTF8(reqs), *m = PyUnicode_AsUTF8(minv);
    if (o.certfile == NULL || o.keyfile == NULL || r == NULL || m == NULL
        || PyErr_Occurred())
        goto done;
    o.cert_reqs = strcmp(r, "required") == 0   ? WC_TLS_VERIFY_REQUIRED
                  : strcmp(r, "optional") == 0 ? WC_TLS_VERIFY_OPTIONAL
                                               : WC_TLS_VERIFY_NONE;
    o.min_version = strcmp(m, "1.3") == 0 ? 13 : 12;
    if (get_bool(adj, "http2", &o.h2) < 0)
        goto done;
    long long cache, timeout;
    if (get_int(adj, "tls_session_cache", 0, &cache) < 0
        || get_int(adj, "tls_session_timeout", 1, &timeout) < 0)
        goto done;
    if (cache > INT_MAX || timeout > 604800) {
        /* RFC 8446: a ticket lives for a week at most. */
        PyErr_SetString(PyExc_ValueError, cache > INT_MAX
                        ? "tls_session_cache is too large"
                        : "tls_session_timeout must be at most 604800 (a "
                          "week)");
        goto done;
    }
    o.session_cache = (int)cache;
    o.session_timeout = (int)timeout;
    /* sni_certs: (certfile, keyfile) pairs; settings without it have
     * none. */
    sni = PyObject_GetAttrString(adj, "sni_certs");
    if (sni == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        sni = PyList_New(0);
    }
    if (sni == NULL)
        goto done;
    /* A tuple of its own: the pairs' strings are read without the GIL
     * (wc_tls_new), and a list could change meanwhile. */
    Py_SETREF(sni, PySequence_Tuple(sni));
    if (sni == NULL)
        goto done;
    Py_ssize_t n_sni = PyTuple_GET_SIZE(sni);
    if (n_sni > 0) {
        sni_files = PyMem_Calloc((size_t)n_sni * 2, sizeof(*sni_files));
        if (sni_files == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n_sni; i++) {
            /* Borrowed: the strings live as long as sni holds the pairs. */
            PyObject *pair = PyTuple_GET_ITEM(sni, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2
                || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0))
                || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
                PyErr_SetString(PyExc_TypeError, "sni_certs: each item must "
                                "be a (certfile, keyfile) tuple of str");
                goto done;
            }
            sni_files[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 0));
            sni_files[n_sni + i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 1));
            if (sni_files[i] == NULL || sni_files[n_sni + i] == NULL)
                goto done;
        }
        o.sni_certfiles = sni_files;
        o.sni_keyfiles = sni_files + n_sni;
        o.n_sni = (int)n_sni;
    }
    char err[1024], warn[4096];
    int failed;
    Py_BEGIN_ALLOW_THREADS      /* reads files */
    failed = wc_tls_new(out, &o, err, sizeof(err), warn, sizeof(warn)) < 0;
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_SetString(PyExc_ValueError, err);
        goto done;
    }
    if (warn[0] && PyErr_WarnEx(PyExc_UserWarning, warn, 1) < 0) {
        wc_tls_free(*out);
        *out = NULL;
        goto done;
    }
    rv = 0;
done:
    Py_XDECREF(cert);
    Py_XDECREF(key);
    Py_XDECREF(ca);
    Py_XDECREF(ciphers);
    Py_XDECREF(reqs);
    Py_XDECREF(minv);
    Py_XDECREF(pw);
    Py_XDECREF(sni);
    PyMem_Free(sni_files);
    return rv;
}

/* _core.tls_check(adj): build adj's TLS context and drop it, so that a
 * mistake in the TLS settings is reported before anything starts. */
static PyObject *
core_tls_check(PyObject *module, PyObject *adj)
{
    wc_tls_t *t = NULL;
    if (read_tls(adj, &t) < 0)
        return NULL;
    wc_tls_free(t);
    Py_RETURN_NONE;
}

/* New reference: the environ keys every request on one listener shares. */
static PyObject *
make_template(ServerObject *so, PyObject *adj, PyObject *port, int tls)
{
    PyObject *d = PyDict_New();
    PyObject *v = NULL;
    if (d == NULL)
        return NULL;
#define SET(key, expr)                                          \
    do {                                                        \
        v = (expr);                                             \
        if (v == NULL || PyDict_SetItemString(d, key, v) < 0)   \
            goto error;                                         \
        Py_CLEAR(v);                                            \
    } while (0)
    SET("SERVER_NAME", get_str(adj, "server_name"));
    SET("SERVER_PORT", Py_NewRef(port));
    /* No ident: no key (PEP 3333 values are str; waitress puts None). */
    if (so->srv->cfg.ident[0])
        SET("SERVER_SOFTWARE", PyUnicode_FromString(so->srv->cfg.ident));
    SET("SCRIPT_NAME", Py_NewRef(so->url_prefix));
    SET("wsgi.version", Py_BuildValue("(ii)", 1, 0));
    if (tls) {
        SET("wsgi.url_scheme", PyUnicode_FromString("https"));
        SET("HTTPS", PyUnicode_FromString("on"));
    } else {
        SET("wsgi.url_scheme", get_str(adj, "url_scheme"));
    }
    SET("wsgi.multithread", Py_NewRef(Py_True));
    SET("wsgi.multiprocess", Py_NewRef(Py_False));
    SET("wsgi.run_once", Py_NewRef(Py_False));
    SET("wsgi.input_terminated", Py_NewRef(Py_True));
    SET("wsgi.file_wrapper", Py_NewRef(so->file_wrapper));
#undef SET
    if (wc_environ_reserve(d) < 0)
        goto error;
    return d;

error:
    Py_XDECREF(v);
    Py_DECREF(d);
    return NULL;
}

/* ---- Server ------------------------------------------------------------- */

/* Request bodies are allocated by the loop thread and freed by workers, in
 * glibc arenas that give memory back to the kernel as soon as 128 KiB sit
 * free at their top: with bodies of tens of KiB that is an madvise and a
 * round of page faults per request (it halved POST throughput).  Keep up to
 * 16 MiB per arena instead, unless the user tuned it himself.  glibc has
 * no per-arena setting: this is process-wide, so it is done once per
 * process, by the first Server (docs/design.rst, "Memory"). */
static void
tune_malloc_once(void)
{
    const char *t = getenv("GLIBC_TUNABLES");
    if (getenv("MALLOC_TRIM_THRESHOLD_") || (t && strstr(t, "trim_threshold")))
        return;
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
}

static void
tune_malloc(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, tune_malloc_once);
}

static PyObject *
server_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"app", "listeners", "adj", "drop_proxy_headers",
                             "access_log", "metrics", "metrics_slot", NULL};
    PyObject *app, *listeners, *adj, *access_log = Py_None;
    PyObject *metrics = Py_None;
    Py_ssize_t metrics_slot = 0;
    int drop = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|pOOn:Server", kwlist,
                                     &app, &listeners, &adj, &drop,
                                     &access_log, &metrics, &metrics_slot))
        return NULL;
    if (!PyCallable_Check(app)) {
        PyErr_SetString(PyExc_TypeError, "app must be callable");
        return NULL;
    }
    listeners = PySequence_Fast(listeners, "listeners must be a sequence");
    if (listeners == NULL)
        return NULL;
    Py_ssize_t nls = PySequence_Fast_GET_SIZE(listeners);
    if (nls > UINT16_MAX) {     /* a channel keeps its listener's index */
        PyErr_SetString(PyExc_ValueError, "too many listeners");
        Py_DECREF(listeners);
        return NULL;
    }

    PyObject *module = PyType_GetModuleByDef(type, &core_module);
    if (module == NULL) {
        Py_DECREF(listeners);
        return NULL;
    }
    module_state *st = get_state(module);

    ServerObject *so = (ServerObject *)type->tp_alloc(type, 0);
    if (so == NULL) {
        Py_DECREF(listeners);
        return NULL;
    }
    so->srv = PyMem_Calloc(1, sizeof(wc_server_t));
    if (so->srv == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    wc_server_t *srv = so->srv;
    srv->owner = so;
    so->app = Py_NewRef(app);
    so->access_log = access_log != Py_None ? Py_NewRef(access_log) : NULL;
    so->sr_type = Py_NewRef(st->sr_type);
    so->hints_type = Py_NewRef(st->hints_type);
    so->input_type = Py_NewRef(st->input_type);
    so->file_wrapper = Py_NewRef(st->filewrapper_type);
    so->disc_type = Py_NewRef(st->disc_type);
    so->bad_request = Py_NewRef(st->bad_request);
    so->io_open = Py_NewRef(st->io_open);
    so->format_exc = Py_NewRef(st->format_exc);
    PyObject *logging = PyImport_ImportModule("logging");
    if (logging == NULL)
        goto error;
    so->logger = PyObject_CallMethod(logging, "getLogger", "s", "waitress_c");
    so->qlogger = PyObject_CallMethod(logging, "getLogger", "s",
                                      "waitress_c.queue");
    Py_DECREF(logging);
    if (so->logger == NULL || so->qlogger == NULL)
        goto error;
    /* The error lines about a request write its path escaped as the
     * access log writes its values: waitress_c/access_log.py, escape(). */
    PyObject *alog = PyImport_ImportModule("waitress_c.access_log");
    if (alog == NULL)
        goto error;
    so->log_escape = PyObject_GetAttrString(alog, "escape");
    Py_DECREF(alog);
    if (so->log_escape == NULL)
        goto error;

    if (read_config(&srv->cfg, adj) < 0)
        goto error;
    srv->cfg.drop_proxy_headers = drop;
    so->url_prefix = get_str(adj, "url_prefix");
    if (so->url_prefix == NULL)
        goto error;
    so->url_prefix_bytes = PyUnicode_AsLatin1String(so->url_prefix);
    if (so->url_prefix_bytes == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            goto error;
        PyErr_Clear();      /* no latin-1 path can start with it */
        so->url_prefix_bytes = Py_NewRef(Py_None);
    }

    tune_malloc();
    int rv = wc_server_init(srv);
    if (rv < 0) {
        PyErr_Format(PyExc_OSError, "cannot start the event loop: %s",
                     uv_strerror(rv));
        PyMem_Free(so->srv);
        so->srv = NULL;
        goto error;
    }
    if (wc_dispatch_slots_init(srv) < 0) {
        PyErr_NoMemory();
        goto error;
    }
    srv->m = srv->own_m;
    if (metrics != Py_None) {
        /* A slot of the metrics buffer (metrics.py); the view keeps the
         * buffer alive and fixed in memory while the server may write. */
        srv->m = wc_metrics_attach(metrics, metrics_slot, &so->mview);
        if (srv->m == NULL)
            goto error;
    }
    wc_m_set(srv->m, WC_M_THREADS, (uint64_t)srv->cfg.threads);
    if (read_tls(adj, &srv->tls) < 0)
        goto error;
    srv->cfg.tls = srv->tls != NULL;
    srv->listeners = calloc((size_t)(nls ? nls : 1), sizeof(wc_listener_t));
    if (srv->listeners == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    so->templates = PyTuple_New(nls);
    if (so->templates == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < nls; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(listeners, i);
        int fd, is_unix, owned = 1, plain = 0;
        PyObject *port;
        if (!PyArg_ParseTuple(item, "ipU|pp:listener", &fd, &is_unix, &port,
                              &owned, &plain))
            goto error;
        PyObject *t = make_template(so, adj, port, srv->cfg.tls && !plain);
        if (t == NULL)
            goto error;
        PyTuple_SET_ITEM(so->templates, i, t);
        rv = wc_server_listen(srv, (int)i, fd, is_unix, owned, plain);
        if (rv < 0) {
            PyErr_Format(PyExc_OSError, "cannot listen on fd %d: %s", fd,
                         uv_strerror(rv));
            goto error;
        }
        srv->nlisteners = (int)i + 1;
    }
    srv->live_workers = srv->cfg.threads;
    Py_DECREF(listeners);
    return (PyObject *)so;

error:
    Py_DECREF(listeners);
    Py_DECREF(so);
    return NULL;
}

static PyObject *
server_run(ServerObject *so, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"sigfd", NULL};
    int sigfd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|i:run", kwlist, &sigfd))
        return NULL;
    if (so->srv->running || so->srv->finished) {
        PyErr_SetString(PyExc_RuntimeError, "the server runs only once");
        return NULL;
    }
    int rv;
    Py_BEGIN_ALLOW_THREADS
    rv = wc_server_run(so->srv, sigfd);
    Py_END_ALLOW_THREADS
    /* Bodies sent after the last worker left. */
    wc_dispatch_release_all(so->srv, 1);
    /* Lines the loop queued after the last worker left, when no log
     * thread is there to emit them: a running one emits every line before
     * it returns (server.py joins it), and emitting here as well could
     * put the last lines out of order (the log thread holding "Shutting
     * down" while this one wrote "Server stopped"). */
    int log_running;
    Py_BEGIN_ALLOW_THREADS      /* qlock: the house rule, as in close() */
    pthread_mutex_lock(&so->srv->qlock);
    log_running = so->srv->log_running;
    pthread_mutex_unlock(&so->srv->qlock);
    Py_END_ALLOW_THREADS
    if (!log_running)
        wc_dispatch_drain_logs(so->srv, so->logger, so->qlogger);
    if (rv < 0) {
        PyErr_Format(PyExc_OSError, "cannot serve: %s", uv_strerror(rv));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
server_close(ServerObject *so, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"why", NULL};
    const char *why = NULL;     /* borrowed from the argument, alive
                                   until we return */
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|z:close", kwlist, &why))
        return NULL;
    /* qlock is a leaf lock, but release the GIL anyway: house rule. */
    Py_BEGIN_ALLOW_THREADS
    wc_server_request_close(so->srv, why);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* tls_reload(adj): read the certificate, key and CA files again (adj's
 * TLS settings, as at creation) and use them for the connections accepted
 * from now on.  ValueError (the old ones stay) if they cannot work, or if
 * the server does not speak TLS. */
static PyObject *
server_tls_reload(ServerObject *so, PyObject *adj)
{
    wc_tls_t *t = NULL;
    if (!so->srv->cfg.tls) {
        PyErr_SetString(PyExc_ValueError, "this server does not speak TLS");
        return NULL;
    }
    if (read_tls(adj, &t) < 0)
        return NULL;
    if (t == NULL) {
        PyErr_SetString(PyExc_ValueError, "certfile is not set");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS      /* takes qlock */
    wc_server_tls_swap(so->srv, t);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *
server_worker(ServerObject *so, PyObject *unused)
{
    return wc_dispatch_worker_main((PyObject *)so);
}

static PyObject *
server_log_thread(ServerObject *so, PyObject *unused)
{
    return wc_dispatch_log_main((PyObject *)so);
}

static PyObject *
server_get_connections(ServerObject *so, void *unused)
{
    /* Racy by nature; for tests and monitoring. */
    return PyLong_FromUnsignedLongLong(so->srv->nchannels);
}

static PyObject *
server_get_stopping(ServerObject *so, void *unused)
{
    return PyLong_FromLong(atomic_load(&so->srv->stopping));
}

/* Every PyObject * the Server holds; tp_clear drops the same ones.  The
 * loop thread never reads them, and workers hold a reference to the
 * Server while they serve, so a Server being cleared serves no one. */
static int
server_traverse(ServerObject *so, visitproc visit, void *arg)
{
    Py_VISIT(so->app);
    Py_VISIT(so->logger);
    Py_VISIT(so->qlogger);
    Py_VISIT(so->templates);
    Py_VISIT(so->url_prefix);
    Py_VISIT(so->url_prefix_bytes);
    Py_VISIT(so->bad_request);
    Py_VISIT(so->file_wrapper);
    Py_VISIT(so->input_type);
    Py_VISIT(so->sr_type);
    Py_VISIT(so->hints_type);
    Py_VISIT(so->disc_type);
    Py_VISIT(so->io_open);
    Py_VISIT(so->format_exc);
    Py_VISIT(so->access_log);
    Py_VISIT(so->log_escape);
    Py_VISIT(Py_TYPE(so));
    return 0;
}

static int
server_clear(ServerObject *so)
{
    Py_CLEAR(so->app);
    Py_CLEAR(so->logger);
    Py_CLEAR(so->qlogger);
    Py_CLEAR(so->templates);
    for (int i = 0; i < WC_TLS_VALS; i++)
        Py_CLEAR(so->tls_vals[i]);
    Py_CLEAR(so->url_prefix);
    Py_CLEAR(so->url_prefix_bytes);
    Py_CLEAR(so->bad_request);
    Py_CLEAR(so->file_wrapper);
    Py_CLEAR(so->input_type);
    Py_CLEAR(so->sr_type);
    Py_CLEAR(so->hints_type);
    Py_CLEAR(so->disc_type);
    Py_CLEAR(so->io_open);
    Py_CLEAR(so->format_exc);
    Py_CLEAR(so->access_log);
    Py_CLEAR(so->log_escape);
    return 0;
}

static void
server_dealloc(ServerObject *so)
{
    PyTypeObject *tp = Py_TYPE(so);
    PyObject_GC_UnTrack(so);
    if (so->srv) {
        wc_server_t *srv = so->srv;
        int live;
        pthread_mutex_lock(&srv->qlock);
        live = srv->live_workers;
        if (!srv->finished) {
            /* Never ran: let idle workers go. */
            srv->workers_stop = 1;
            pthread_cond_broadcast(&srv->qcond);
        }
        pthread_mutex_unlock(&srv->qlock);
        /* Workers still inside the app (a hard stop) keep pointers to the
         * server: leak it rather than free under them. */
        if (live == 0 || !srv->workers_started) {
            wc_server_destroy(srv);
            wc_dispatch_release_all(srv, 0);
            wc_dispatch_slots_free(srv);
            PyMem_Free(srv);
            if (so->mview.obj)
                PyBuffer_Release(&so->mview);
        }
    } else if (so->mview.obj) {
        PyBuffer_Release(&so->mview);
    }
    server_clear(so);
    tp->tp_free(so);
    Py_DECREF(tp);
}

static PyMethodDef server_methods[] = {
    {"run", (PyCFunction)(void (*)(void))server_run,
     METH_VARARGS | METH_KEYWORDS,
     "run(sigfd=-1): serve until closed.  sigfd is the read end of\n"
     "signal.set_wakeup_fd's socket: SIGINT/SIGTERM stop the server."},
    {"close", (PyCFunction)(void (*)(void))server_close,
     METH_VARARGS | METH_KEYWORDS,
     "close(why=None): stop gracefully (a second call stops at once).  Any\n"
     "thread.  why (a str) is the cause the stop line names, instead of\n"
     "'close() called'."},
    {"tls_reload", (PyCFunction)server_tls_reload, METH_O,
     "tls_reload(adj): new TLS connections use adj's files, read again."},
    {"worker", (PyCFunction)server_worker, METH_NOARGS,
     "worker(): a worker thread's body; returns once the server stopped."},
    {"busy_requests", (PyCFunction)wc_dispatch_busy_requests, METH_O,
     "busy_requests(older_than): (threads, [(method, path, age, key)...])\n"
     "for the worker threads inside the application on one request for at\n"
     "least older_than seconds (age in seconds; key tells requests apart).\n"
     "Any thread; no lock taken."},
    {"log_thread", (PyCFunction)server_log_thread, METH_NOARGS,
     "log_thread(): emits the server's log lines; returns once run() has\n"
     "returned and every line is out."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef server_getset[] = {
    {"connections", (getter)server_get_connections, NULL,
     "open client connections", NULL},
    {"stopping", (getter)server_get_stopping, NULL,
     "0 serving, 1 stopping gracefully, 2 stopped at once", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot server_slots[] = {
    {Py_tp_new, server_new},
    {Py_tp_methods, server_methods},
    {Py_tp_getset, server_getset},
    {Py_tp_traverse, server_traverse},
    {Py_tp_clear, server_clear},
    {Py_tp_dealloc, server_dealloc},
    {Py_tp_doc, "Server(app, listeners, adj, drop_proxy_headers=False, "
                "access_log=None, metrics=None, metrics_slot=0)"},
    {0, NULL},
};

static PyType_Spec server_spec = {
    .name = "waitress_c._core.Server",
    .basicsize = sizeof(ServerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = server_slots,
};

/* ---- module ------------------------------------------------------------- */

static int
add_type(PyObject *m, PyType_Spec *spec, PyObject **slot)
{
    *slot = PyType_FromModuleAndSpec(m, spec, NULL);
    if (*slot == NULL)
        return -1;
    const char *dot = strrchr(spec->name, '.');
    return PyModule_AddObjectRef(m, dot + 1, *slot);
}

static int
core_exec(PyObject *m)
{
    module_state *st = get_state(m);
    if (wc_wsgi_init(m) < 0 || wc_metrics_init(m) < 0)
        return -1;
    if (add_type(m, &server_spec, &st->server_type) < 0
        || add_type(m, &wc_start_response_spec, &st->sr_type) < 0
        || add_type(m, &wc_early_hints_spec, &st->hints_type) < 0
        || add_type(m, &wc_input_spec, &st->input_type) < 0
        || add_type(m, &wc_filewrapper_spec, &st->filewrapper_type) < 0
        || add_type(m, &wc_disconnected_spec, &st->disc_type) < 0)
        return -1;
    st->bad_request = PyErr_NewExceptionWithDoc(
        "waitress_c._core.BadRequest",
        "Raised by an application (the proxy-header middleware) to answer\n"
        "400 Bad Request in the server's error format and close.",
        PyExc_Exception, NULL);
    if (st->bad_request == NULL
        || PyModule_AddObjectRef(m, "BadRequest", st->bad_request) < 0)
        return -1;
    PyObject *io = PyImport_ImportModule("io");
    if (io == NULL)
        return -1;
    st->io_open = PyObject_GetAttrString(io, "open");
    Py_DECREF(io);
    PyObject *tb = PyImport_ImportModule("traceback");
    if (tb == NULL)
        return -1;
    st->format_exc = PyObject_GetAttrString(tb, "format_exception");
    Py_DECREF(tb);
    if (st->io_open == NULL || st->format_exc == NULL)
        return -1;
    /* False in a build without OpenSSL (tls.c's stubs): tests and the
     * settings' check look here. */
    if (PyModule_AddObjectRef(m, "HAVE_TLS",
                              WC_HAVE_TLS ? Py_True : Py_False) < 0)
        return -1;
    return PyModule_AddStringConstant(m, "libuv_version",
                                      uv_version_string());
}

static int
core_traverse(PyObject *m, visitproc visit, void *arg)
{
    module_state *st = get_state(m);
    Py_VISIT(st->server_type);
    Py_VISIT(st->sr_type);
    Py_VISIT(st->hints_type);
    Py_VISIT(st->input_type);
    Py_VISIT(st->filewrapper_type);
    Py_VISIT(st->disc_type);
    Py_VISIT(st->bad_request);
    Py_VISIT(st->io_open);
    Py_VISIT(st->format_exc);
    return 0;
}

static int
core_clear(PyObject *m)
{
    module_state *st = get_state(m);
    Py_CLEAR(st->server_type);
    Py_CLEAR(st->sr_type);
    Py_CLEAR(st->hints_type);
    Py_CLEAR(st->input_type);
    Py_CLEAR(st->filewrapper_type);
    Py_CLEAR(st->disc_type);
    Py_CLEAR(st->bad_request);
    Py_CLEAR(st->io_open);
    Py_CLEAR(st->format_exc);
    return 0;
}

static void
core_free(void *m)
{
    core_clear((PyObject *)m);
}

/* One interpreter per process: the environ keys (wsgi.c) and the parser
 * tables are process-wide statics, and the loop thread is not tied to an
 * interpreter.  The GIL is needed: workers rely on it to share the
 * Server's objects.  docs/design.rst says what either means for users. */
static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static PyMethodDef core_methods[] = {
    {"tls_check", core_tls_check, METH_O,
     "tls_check(adj): raise ValueError if adj's TLS settings cannot work."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_methods = core_methods,
    .m_name = "waitress_c._core",
    .m_doc = "The C core of waitress_c: libuv loop, http-parser, workers.",
    .m_size = sizeof(module_state),
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
