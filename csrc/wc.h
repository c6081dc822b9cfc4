/* wc.h: the internal header of waitress_c._core's worker side (Python).
 *
 * loop.h (included below) holds the loop side, without Python; this adds
 * the structs and prototypes of the files that hold the GIL.  Thread and GIL rules are stated per field group;
 * docs/design.rst draws the whole picture.
 *
 * Two error domains, never mixed: loop-side functions (no GIL) return 0 or a
 * negative UV_E* / -errno; functions that need the GIL return NULL / -1 with
 * a Python exception set.
 */
#ifndef WC_H
#define WC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* 3.11: PyMemberDef's type codes under their 3.12 names. */
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif

/* getattr that returns 0 instead of raising AttributeError (1 found,
 * -1 another error). */
#if PY_VERSION_HEX >= 0x030D0000
#define WC_GETATTR_OPT PyObject_GetOptionalAttr
#else
#define WC_GETATTR_OPT _PyObject_LookupAttr
#endif

#include "loop.h"

/* Free threading (docs/design.rst, "Free threading: what two workers can
 * touch").  WC_BEGIN_LOCKED(o) ... WC_END_LOCKED() is o's per-object
 * critical section, for objects the application may hand to other
 * threads; it is nothing where there is a GIL (before 3.13, and on a
 * normal build, where CPython's macros are empty too). */
#if PY_VERSION_HEX >= 0x030D0000
#define WC_BEGIN_LOCKED(o) Py_BEGIN_CRITICAL_SECTION(o)
#define WC_END_LOCKED() Py_END_CRITICAL_SECTION()
#else
#define WC_BEGIN_LOCKED(o) {
#define WC_END_LOCKED() }
#endif

/* Is `op` referenced by the caller alone?  With the GIL, Py_REFCNT(op) ==
 * 1 says so.  A free-threaded build splits the count between the thread
 * that owns the object and the others, and only
 * PyUnstable_Object_IsUniquelyReferenced (3.14) means the same there. */
static inline int
wc_sole_ref(PyObject *op)
{
#if PY_VERSION_HEX >= 0x030E0000
    return PyUnstable_Object_IsUniquelyReferenced(op);
#else
    return Py_REFCNT(op) == 1;
#endif
}


/* Marks on prototypes, as psycopg does: what the caller must know. */
#define WC_RAISES_NEG   /* returns -1 with an exception set */

/* Runs in a Python thread; holds the GIL only while serving tasks. */
PyObject *wc_dispatch_worker_main(PyObject *server);
void wc_dispatch_drain_logs(wc_server_t *srv, PyObject *logger,
                            PyObject *qlogger);
/* Runs in a Python thread: emits the loop's log lines until the server
 * has stopped.  Holds the GIL only while emitting. */
PyObject *wc_dispatch_log_main(PyObject *server);
/* Server.busy_requests(older_than): (threads, [(method, path, age,
 * key), ...]) for the worker threads inside the app on one request for
 * at least older_than seconds.  New reference; GIL held, no lock. */
PyObject *wc_dispatch_busy_requests(PyObject *server, PyObject *arg);

/* ---- metrics.c ------------------------------------------------------- */

/* A cell whose writers all hold the GIL (requests, durations, busy
 * threads): where there is a GIL it serializes them, and a load and a
 * store do, without a locked instruction; a free-threaded build adds
 * atomically. */
static inline void
wc_m_gil_add(wc_metric_t *m, int field, int64_t n)
{
#ifdef Py_GIL_DISABLED
    wc_m_add(m, field, n);
#else
    wc_m_own_add(m, field, (uint64_t)n);
#endif
}

/* Slot `slot` of the writable metrics buffer `buf`: its cells, with `view`
 * holding the buffer (the caller releases it), or NULL with an
 * exception. */
wc_metric_t *wc_metrics_attach(PyObject *buf, Py_ssize_t slot,
                               Py_buffer *view);
/* The module's metrics_read, metrics_fold and METRICS_LAYOUT. */
int wc_metrics_init(PyObject *module) WC_RAISES_NEG;

/* ---- wsgi.c, environ.c, response.c: one request on a worker (GIL held) - */

struct wc_worker_s {
    PyObject *server;           /* ServerObject, borrowed */
    PyObject *spare_sr;         /* a StartResponse to reuse, owned */
    int more;                   /* more pipelined requests follow */
    wc_buf_t out;               /* response head scratch */
    wc_slot_t *slot;            /* its record (dispatch.c), or NULL */
    time_t date_sec;
    char date[40];
    size_t date_len;
};

int wc_wsgi_init(PyObject *module);
void wc_wsgi_serve(wc_worker_t *w, wc_channel_t *ch, wc_request_t *req,
                   int *close);
void wc_wsgi_worker_done(wc_worker_t *w);
/* A server-generated error page in waitress's format, with
 * Connection: close.  No Python needed. */
uint64_t wc_response_error(wc_worker_t *w, wc_channel_t *ch, int version,
                           int status, const char *detail, size_t dlen);
/* The access log line of a server error answered without the app. */
void wc_wsgi_log_error(wc_worker_t *w, wc_channel_t *ch, wc_request_t *req,
                       int status, uint64_t nbytes);
const char *wc_date(wc_worker_t *w, size_t *len);
int wc_environ_init(void) WC_RAISES_NEG;

/* ---- module.c: the ServerObject, module state -------------------------- */

typedef struct {
    PyObject_HEAD
    wc_server_t *srv;
    PyObject *app;
    PyObject *logger;
    PyObject *qlogger;
    PyObject *templates;        /* tuple: one environ template/listener */
    PyObject *url_prefix;       /* str */
    PyObject *url_prefix_bytes; /* its latin-1 bytes, or None */
    PyObject *bad_request;      /* the BadRequest exception type */
    PyObject *file_wrapper;     /* the FileWrapper type */
    PyObject *input_type;
    PyObject *sr_type;
    PyObject *hints_type;       /* EarlyHints */
    PyObject *disc_type;
    PyObject *io_open;
    PyObject *format_exc;
    PyObject *access_log;       /* callable, or NULL when off */
    PyObject *log_escape;       /* access_log.escape, for error lines */
    Py_buffer mview;            /* the metrics buffer srv->m is in, if
                                   mview.obj */
    /* The last SSL_PROTOCOL, SSL_CIPHER, SSL_CLIENT_VERIFY, SSL_TLS_SNI
     * and SSL_SESSION_RESUMED values made (environ.c: set_tls), or
     * NULL. */
#define WC_TLS_VALS 5
    PyObject *tls_vals[WC_TLS_VALS];
} ServerObject;

/* environ.c (wc_environ_build: after StartResponseObject, below). */
PyObject *wc_environ_peer(wc_channel_t *ch);
/* Add the keys every request sets to a listener's template. */
int wc_environ_reserve(PyObject *tmpl) WC_RAISES_NEG;

/* ---- start_response.c --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;  /* the call without an argument tuple */
    PyObject *status;           /* str or NULL */
    PyObject *write;            /* cached bound write(), or NULL */
    PyObject *headers;          /* list or NULL */
    int64_t content_length;     /* from the app, -1 if none */
    int called;
    int headers_sent;
    int active;                 /* the request is still running */
    int has_server;
    int has_date;
    PyObject *hints;            /* its EarlyHints (wsgi.early_hints), or
                                   NULL */
    PyObject *tmpls;            /* tuple: the server's environ templates
                                   with hints in them (environ.c), or
                                   NULL */
    /* Set by wsgi.c for write(): */
    wc_worker_t *w;
    wc_channel_t *ch;
    wc_request_t *req;
    void *resp;                 /* struct response in wsgi.c */
} StartResponseObject;

extern PyType_Spec wc_start_response_spec;
/* Fill in a new StartResponse (PyObject_New leaves it raw). */
void wc_start_response_init(StartResponseObject *sr);

/* environ["wsgi.early_hints"] of one request: points back to the
 * StartResponse it was made for (borrowed: the StartResponse owns it and
 * clears sr when it lets go of it), NULL once detached. */
typedef struct {
    PyObject_HEAD
    StartResponseObject *sr;
} EarlyHintsObject;

extern PyType_Spec wc_early_hints_spec;
/* sr->hints for the request about to start: a new one when there was
 * none, or when the last one is still referenced beyond sr and its
 * templates (an environ kept past its request).  Returns 1 when it is
 * new, 0 when it is the same, -1 with an exception. */
int wc_early_hints_take(StartResponseObject *sr, PyTypeObject *type);
/* environ.c.  New reference; *path_out gets a new reference to PATH_INFO
 * (for log lines).  `sr` is the request's StartResponse: the environ gets
 * its wsgi.early_hints. */
PyObject *wc_environ_build(ServerObject *so, wc_channel_t *ch,
                           wc_request_t *req, StartResponseObject *sr,
                           PyObject **path_out);
/* Is the str `s` the lowercase ASCII `lit`, ignoring case? */
int wc_ieq_ascii(PyObject *s, const char *lit, size_t n);
#define WC_IEQ(s, lit) wc_ieq_ascii((s), (lit), sizeof(lit) - 1)
/* wsgi.c: write() of a running response. */
int wc_response_write(StartResponseObject *sr, const char *p, size_t n)
    WC_RAISES_NEG;
/* response.c: a 103 Early Hints with these checked headers, sent now;
 * nothing on HTTP/1.0. */
int wc_response_hints(StartResponseObject *sr, PyObject *headers)
    WC_RAISES_NEG;

/* ---- input.c: wsgi.input over memory --------------------------------- */

extern PyType_Spec wc_input_spec;
/* Steals `data` (malloc'd, may be NULL for empty). New reference. */
PyObject *wc_input_new(PyTypeObject *type, char *data, size_t len);

/* ---- filewrapper.c ------------------------------------------------------ */

extern PyType_Spec wc_filewrapper_spec;
extern PyType_Spec wc_disconnected_spec;
PyObject *wc_disconnected_new(PyTypeObject *type, wc_channel_t *ch);
/* waitress's rule: seekable() is true, or no seekable() but seek and tell.
 * Never raises. */
int wc_filelike_seekable(PyObject *f);

typedef struct {
    PyObject_HEAD
    PyObject *filelike;
    Py_ssize_t block_size;
} FileWrapperObject;

#endif /* WC_H */
