/* wc.h: the one internal header of waitress_c._core.
 *
 * Forward typedefs, the structs that more than one file touches, and every
 * cross-file prototype.  Thread and GIL rules are stated per field group;
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

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

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

#define WC_CONTAINER_OF(ptr, type, field) \
    ((type *)((char *)(ptr) - offsetof(type, field)))

#define WC_WUR __attribute__((warn_unused_result))

/* Marks on prototypes, as psycopg does: what the caller must know. */
#define WC_RAISES_NEG   /* returns -1 with an exception set */

#define WC_READ_SIZE 65536
#define WC_IOV_MAX 64
#define WC_CONTINUE_LINE "HTTP/1.1 100 Continue\r\n\r\n"

typedef struct wc_buf_s wc_buf_t;
typedef struct wc_spool_s wc_spool_t;
typedef struct wc_seg_s wc_seg_t;
typedef struct wc_outq_s wc_outq_t;
typedef struct wc_header_s wc_header_t;
typedef struct wc_request_s wc_request_t;
typedef struct wc_chunker_s wc_chunker_t;
typedef struct wc_channel_s wc_channel_t;
typedef struct wc_listener_s wc_listener_t;
typedef struct wc_config_s wc_config_t;
typedef struct wc_server_s wc_server_t;
typedef struct wc_worker_s wc_worker_t;
typedef struct wc_logmsg_s wc_logmsg_t;
typedef struct wc_waiter_s wc_waiter_t;

/* ---- buffer.c: plain growable bytes, body spool, output queue ---------- */

struct wc_buf_s {
    char *data;
    size_t len;
    size_t cap;
};

size_t wc_fmt_u64(char *buf, uint64_t v);
int wc_buf_reserve(wc_buf_t *b, size_t extra) WC_WUR;
int wc_buf_append(wc_buf_t *b, const void *p, size_t n) WC_WUR;
int wc_buf_appendf(wc_buf_t *b, const char *fmt, ...) WC_WUR
    __attribute__((format(printf, 2, 3)));
void wc_buf_free(wc_buf_t *b);

/* A request body: in memory up to `overflow` bytes, then in an unlinked
 * temp file.  Written by the loop thread, then owned by one worker. */
struct wc_spool_s {
    wc_buf_t mem;
    int fd;             /* -1 while in memory */
    uint64_t len;
    size_t overflow;
    const char *dir;    /* temp directory (cfg->tmpdir); NULL: /tmp */
};

void wc_spool_init(wc_spool_t *s, size_t overflow);
int wc_spool_write(wc_spool_t *s, const char *p, size_t n) WC_WUR;
void wc_spool_free(wc_spool_t *s);

/* Output segments: workers append at the tail, the loop consumes the head;
 * both under the channel lock.  A segment's data never moves, so a
 * uv_write may point into it while a worker appends behind. */
struct wc_seg_s {
    wc_seg_t *next;
    const char *base;   /* data, or the bytes of obj */
    void *obj;          /* a PyObject the bytes belong to (a reference) */
    size_t off;         /* consumed (written) bytes */
    size_t len;         /* filled bytes */
    size_t cap;
    int fd;             /* >= 0: a file segment sent with sendfile */
    unsigned close_fd : 1;  /* close fd when the segment is done */
    unsigned no_sendfile : 1; /* sendfile refused this fd: read+write */
    off_t file_off;     /* file segments: next offset */
    char data[];
};

struct wc_outq_s {
    wc_seg_t *head;
    wc_seg_t *tail;
    uint64_t bytes;     /* pending, not yet written */
    uint64_t mem;       /* of which in memory segments */
    int spill_fd;       /* temp file for output over outbuf_overflow */
    uint64_t spill_end;
    wc_seg_t *dead;     /* done segments whose obj a GIL holder releases */
};

void wc_outq_init(wc_outq_t *q);

int wc_outq_append(wc_outq_t *q, const char *p, size_t n) WC_WUR;
int wc_outq_append_ref(wc_outq_t *q, const char *p, size_t n, void *obj)
    WC_WUR;
int wc_outq_append_file(wc_outq_t *q, int fd, off_t off, uint64_t n,
                        int close_fd) WC_WUR;
/* dir: the temp directory (cfg->tmpdir); NULL: /tmp. */
int wc_outq_spill(wc_outq_t *q, const char *dir, const char *p, size_t n)
    WC_WUR;
int wc_outq_iov(wc_outq_t *q, struct iovec *iov, int max, size_t *total);
void wc_outq_consume(wc_outq_t *q, size_t n);
void wc_outq_free(wc_outq_t *q);

/* ---- parser.c: request head, body framing, chunked decoding ------------ */

struct wc_header_s {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
};

struct wc_chunker_s {
    int state;
    uint64_t size;      /* current chunk: bytes still to come */
    uint32_t digits;
    uint32_t ext_len;
    uint32_t trailer_len;
    uint32_t line_len;
};

/* One parsed request.  Built by the loop thread; once complete it belongs
 * to the channel's queue and then to the worker that serves it. */
struct wc_request_s {
    wc_request_t *next;
    wc_buf_t head;              /* request line + headers, raw bytes */
    const char *method;
    const char *target;
    const char *path;           /* origin-form path within target */
    const char *query;          /* after '?', NULL if none */
    const char *authority;      /* absolute-form host[:port], or NULL */
    uint32_t method_len, target_len, path_len, query_len, authority_len;
    int version;                /* 10, 11; 0 when unknown */
    wc_header_t *headers;
    uint32_t nheaders;
    uint32_t headers_cap;
    size_t line_start;          /* head scan: start of the current line */
    int64_t content_length;     /* -1: none */
    uint64_t body_remaining;    /* CL bodies, while reading */
    uint64_t raw_body;          /* chunked: framing bytes included */
    wc_spool_t body;
    wc_chunker_t chunker;
    unsigned chunked : 1;
    unsigned keep_alive : 1;    /* what the request asks for */
    unsigned expect_continue : 1;
    unsigned close_after : 1;   /* framing was doubtful: close after */
    unsigned has_te : 1;
    /* An error "request" carries a status for the worker to answer. */
    int error_status;
    const char *error_detail;   /* static, or detail_buf */
    char detail_buf[160];
};

enum {
    WC_PARSE_HEAD = 0,
    WC_PARSE_BODY,
    WC_PARSE_CHUNKED,
};

extern const char wc_slash[];   /* r->path of "http://host" */
/* parser.c: 1 for the 256 bytes of an RFC 9110 token (tchar), else 0. */
extern const unsigned char *const wc_tchar;
/* target.c: split r->target into path, query, authority.  Returns 0, or
 * -1 with r->error_status set (400 "Bad URI"). */
int wc_parse_target(wc_request_t *r);
wc_request_t *wc_request_new(size_t inbuf_overflow);
void wc_request_free(wc_request_t *r);
void wc_request_error(wc_request_t *r, int status, const char *detail);
void wc_request_errorf(wc_request_t *r, int status, const char *fmt,
                       const char *arg, size_t alen);
/* Copy head bytes from p into r->head, line by line, up to the empty
 * line (then *complete).  Returns the bytes of p used; sets
 * r->error_status on a bare LF or a head over max_header. */
size_t wc_head_scan(wc_request_t *r, const char *p, size_t n, int *complete,
                    const wc_config_t *cfg);
/* Parse a complete head (r->head).  Returns 0 and fills r, or sets
 * r->error_status. */
void wc_parse_head(wc_request_t *r, const wc_config_t *cfg);
/* Feed chunked body bytes; returns bytes consumed, sets *done at the end;
 * sets r->error_status on errors. */
size_t wc_chunked_feed(wc_request_t *r, const char *p, size_t n, int *done,
                       const wc_config_t *cfg);

/* ---- channel.c: one client connection (loop thread) -------------------- */

/* A TCP or unix stream handle, seen as whichever libuv type a call wants. */
typedef union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} wc_stream_u;

struct wc_channel_s {
    wc_stream_u h;
    wc_server_t *srv;
    int listener;               /* index in srv->listeners */
    atomic_int refs;            /* loop 1 until close_cb; task 1; kick 1 */
    int fd;

    /* Loop thread only. */
    wc_channel_t *prev, *next;  /* srv->channels */
    wc_request_t *req;          /* being received */
    int pstate;                 /* WC_PARSE_* */
    uint64_t head_start;        /* ms: first byte of the head in ch->req */
    char *leftover;             /* bytes read but not parsed: backlog */
    size_t leftover_len;
    unsigned reading : 1;
    unsigned closing : 1;       /* uv_close called */
    unsigned stop_parsing : 1;  /* an error or a close request was seen */
    unsigned eof : 1;
    unsigned fresh : 1;         /* no request received yet */
    size_t wlen;                /* bytes in the outstanding uv_write */

    /* Shared: under `lock`. */
    pthread_mutex_t lock;
    wc_waiter_t *waiters;       /* threads parked on this channel */
    wc_request_t *pend_head, *pend_tail;
    int npending;               /* complete requests waiting */
    size_t pend_bytes;          /* their memory */
    int writers;                /* app threads inside write() */
    int busy;                   /* queued for, or held by, a worker */
    wc_outq_t out;
    int writing;                /* a uv_write is outstanding */
    int kicked;                 /* on srv->kick list */
    wc_channel_t *kick_next;
    wc_channel_t *defer_next;
    unsigned close_when_flushed : 1;
    unsigned broken : 1;        /* no more writes: reset, closed, error */
    unsigned continue_wanted : 1; /* 100 Continue owed once idle */
    unsigned want_read : 1;     /* worker asks the loop to read again */
    unsigned saw_eof : 1;       /* copy of eof, for workers */
    unsigned read_paused : 1;   /* backlog full: the loop stopped reading */
    unsigned deferred : 1;      /* on srv->defer_head: output held back */

    /* ms, monotonic: the last byte read or written, or when output
     * started waiting in an empty queue.  Idle and stalled connections
     * are timed from it. */
    _Atomic uint64_t last_activity;
    wc_channel_t *task_next;    /* srv task queue (under queue lock) */

    /* The peer, formatted by workers: family 0 (unix), 4 or 6. */
    uint8_t peer_family;
    uint16_t peer_port;
    unsigned char peer_addr[16];
};

int wc_channel_accept(wc_server_t *srv, uv_stream_t *listener, int index,
                      int *taken);
void wc_channel_close(wc_channel_t *ch);
void wc_channel_unref(wc_channel_t *ch);
void wc_channel_flush(wc_channel_t *ch);
void wc_channel_kicked(wc_channel_t *ch);
void wc_channel_stop(wc_channel_t *ch, int hard);
void wc_channel_maybe_close(wc_channel_t *ch);
/* Caller holds ch->lock: wake every thread parked on the channel. */
void wc_channel_wake_waiters(wc_channel_t *ch);
/* Worker side (any thread, no GIL needed): */
/* owners: NULL, or per iovec the object its bytes belong to (or NULL);
 * then the caller holds the GIL. */
int wc_channel_send(wc_channel_t *ch, struct iovec *iov, void **owners,
                    int n, int defer) WC_WUR;
int wc_channel_send_locked(wc_channel_t *ch, struct iovec *iov,
                           void **owners, int n, int defer) WC_WUR;
void wc_channel_give_back(wc_channel_t *ch);
int wc_channel_send_file(wc_channel_t *ch, int fd, off_t off, uint64_t n,
                         int close_fd) WC_WUR;
int wc_channel_wait_drained(wc_channel_t *ch);
void wc_channel_kick(wc_channel_t *ch);
int wc_channel_disconnected(wc_channel_t *ch);
void wc_channel_writer_enter(wc_channel_t *ch);
void wc_channel_writer_leave(wc_channel_t *ch);
int wc_channel_has_writers(wc_channel_t *ch);
void wc_channel_wait_writers(wc_channel_t *ch);
void wc_channel_release_pending(wc_channel_t *ch, wc_request_t *r);
int wc_channel_backlog_low(const wc_channel_t *ch);
int wc_channel_timed_out(wc_channel_t *ch, uint64_t now);

/* ---- server.c: the loop, listeners, signals, shutdown ------------------ */

struct wc_config_s {
    int threads;
    int backlog;
    size_t recv_bytes;          /* accepted; reads are WC_READ_SIZE */
    uint64_t connection_limit;
    uint64_t channel_timeout_ms;
    uint64_t cleanup_interval_ms;
    uint64_t shutdown_timeout_ms;
    size_t max_header;
    uint64_t max_body;
    size_t inbuf_overflow;
    size_t outbuf_overflow;
    uint64_t outbuf_high_watermark;
    int lookahead;
    int expose_tracebacks;
    int log_socket_errors;
    int drop_proxy_headers;
    char ident[128];            /* "" when none */
    char server_line[160];      /* "Server: <ident>\r\n", or "" */
    size_t server_line_len;
    char error_tag[160];        /* "(generated by X)" */
    char tmpdir[4096];          /* for spooled bodies and spilled output:
                                   tempfile.gettempdir() at creation */
};

struct wc_listener_s {
    wc_stream_u h;
    wc_server_t *srv;
    int index;
    int is_unix;
    int fd;
    int open;
    int owned;                  /* ours to shut: refuse at once on stop */
    int held;                   /* a connection waits: over the limit, or
                                   its accept failed (retried) */
};

struct wc_logmsg_s {
    wc_logmsg_t *next;
    int level;                  /* Python logging level */
    int queue_logger;
    char text[];
};

struct wc_server_s {
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t sweep;
    uv_prepare_t wake;          /* wakes workers once per loop iteration */
    uv_timer_t tick;            /* flushes held-back output, while busy */
    uv_timer_t grace;           /* shutdown_timeout of a graceful stop */
    int tick_on;                /* loop sets it, under qlock */
    atomic_int nbusy;           /* channels held by a task */
    uv_poll_t sigpoll;
    int sigfd;
    wc_config_t cfg;
    void *owner;                /* the ServerObject; never dereferenced
                                   by the loop thread */

    wc_listener_t *listeners;
    int nlisteners;

    /* Loop thread only. */
    wc_channel_t *channels;     /* list head */
    uint64_t nchannels;
    int limit_logged;
    int accepted_turn;          /* accepts in this loop iteration */
    int batch_held;             /* a listener held for ACCEPT_BATCH */
    atomic_int stopping;        /* 1 graceful, 2 hard; workers read it */
    int finished;
    char readbuf[WC_READ_SIZE];

    /* Shared: under qlock. */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    wc_channel_t *task_head, *task_tail;
    int ntasks;
    int idle_workers;
    int waking;                 /* signalled, not yet running */
    uint64_t pops, pops_seen;   /* tasks taken; as of the last tick */
    int live_workers;
    int workers_started;
    int workers_stop;
    int close_requested;        /* close() was called */
    int running;
    int depth_warn;             /* queue depth to log, 0 if none */
    int depth_due;              /* the sweep asks for it to be logged */
    int async_live;             /* uv_async_send is allowed */
    pthread_cond_t log_cond;    /* the log thread waits here */
    int log_stop;
    wc_channel_t *kick_head;    /* channels a worker wants looked at */
    wc_channel_t *defer_head;   /* channels with output held back */
    wc_logmsg_t *log_head, *log_tail;
    wc_seg_t *release_head;     /* sent reference segments (zero copy) */
    uint64_t release_bytes;     /* their bytes */
};

int wc_server_init(wc_server_t *srv);
int wc_server_listen(wc_server_t *srv, int index, int fd, int is_unix,
                     int owned);
int wc_server_run(wc_server_t *srv, int sigfd);
/* The calling thread to SCHED_BATCH (from SCHED_OTHER only); *old and
 * *old_param, when given, receive what to restore. */
struct sched_param;
void wc_thread_batch(int *old, struct sched_param *old_param);
void wc_server_request_close(wc_server_t *srv);
void wc_server_channel_closed(wc_server_t *srv);
void wc_server_log(wc_server_t *srv, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void wc_server_destroy(wc_server_t *srv);
uint64_t wc_now_ms(void);

/* ---- dispatch.c: the task queue and the worker pool -------------------- */

void wc_dispatch_push(wc_server_t *srv, wc_channel_t *ch);
void wc_dispatch_wake(wc_server_t *srv);
int wc_dispatch_want_tick(wc_server_t *srv);
void wc_dispatch_tick(wc_server_t *srv);
void wc_dispatch_sweep(wc_server_t *srv);
/* GIL held: take a reference for a segment (channel_out.c), and release
 * the sent ones: all that are left (`lock`: take qlock; 0 once the server
 * is being destroyed and alone). */
void wc_dispatch_retain(void *obj);
void wc_dispatch_release_all(wc_server_t *srv, int lock);
/* Runs in a Python thread; holds the GIL only while serving tasks. */
PyObject *wc_dispatch_worker_main(PyObject *server);
void wc_dispatch_drain_logs(wc_server_t *srv, PyObject *logger,
                            PyObject *qlogger);
/* Runs in a Python thread: emits the loop's log lines until the server
 * has stopped.  Holds the GIL only while emitting. */
PyObject *wc_dispatch_log_main(PyObject *server);

/* ---- wsgi.c, environ.c, response.c: one request on a worker (GIL held) - */

struct wc_worker_s {
    PyObject *server;           /* ServerObject, borrowed */
    PyObject *spare_sr;         /* a StartResponse to reuse, owned */
    int more;                   /* more pipelined requests follow */
    wc_buf_t out;               /* response head scratch */
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
