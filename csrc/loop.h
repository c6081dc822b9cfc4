/* loop.h: the loop side of waitress_c._core, without Python.
 *
 * Buffers, the request parser, the connection (channel) and its
 * lifecycle, the server loop, and the task queue's loop-side calls.  The
 * files that run on the loop thread (server.c, channel.c, channel_out.c,
 * parser.c, target.c, buffer.c) include this header and not Python.h, so
 * that "the loop never touches Python" is checked by the compiler.  wc.h
 * adds the worker side (Python) on top of it.
 *
 * Loop-side functions (no GIL) return 0 or a negative UV_E* / -errno and
 * never set a Python exception.
 */
#ifndef WC_LOOP_H
#define WC_LOOP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <sys/types.h>
#include <time.h>
#include <uv.h>

#define WC_CONTAINER_OF(ptr, type, field) \
    ((type *)((char *)(ptr) - offsetof(type, field)))

#define WC_WUR __attribute__((warn_unused_result))

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
typedef struct wc_busy_s wc_busy_t;
typedef struct wc_slot_s wc_slot_t;
typedef struct wc_tls_s wc_tls_t;
typedef struct wc_tls_conn_s wc_tls_conn_t;
typedef struct wc_tls_info_s wc_tls_info_t;
typedef struct wc_h2_s wc_h2_t;

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
 * both under the channel lock.  A segment's data never moves while it is
 * queued. */
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
    int pstate;                 /* WC_PARSE_*: wc_request_feed's step */
    uint32_t blank;             /* CR/LF bytes before the request line */
    uint64_t done_ns;           /* uv_hrtime when complete (metrics) */
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
    wc_tls_info_t *tls;         /* the connection's TLS facts (a
                                   reference), or NULL */
    /* An error "request" carries a status for the worker to answer. */
    int error_status;
    const char *error_detail;   /* static, or detail_buf */
    char detail_buf[160];
};

enum {
    WC_PARSE_HEAD = 0,
    WC_PARSE_BODY,
    WC_PARSE_CHUNKED,
    WC_PARSE_DONE,
};

/* wc_request_feed's answers. */
enum {
    WC_FEED_ERROR = -1,         /* r->error_status is set */
    WC_FEED_MORE = 0,           /* every byte taken; more are needed */
    WC_FEED_DONE = 1,           /* complete; the rest is the next request's */
};

/* CR/LF bytes allowed before a request line (RFC 9112 2.2): eight
 * empty lines. */
#define WC_MAX_BLANK 16

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
/* Feed request bytes: head, then the body by its framing.  Returns a
 * WC_FEED_* answer; *used gets the bytes of p taken. */
int wc_request_feed(wc_request_t *r, const char *p, size_t n, size_t *used,
                    const wc_config_t *cfg);

/* ---- channel.c: one client connection (loop thread) -------------------- */

/* A connection's lifecycle.  The loop thread owns it: `state` changes
 * only in channel.c's set_state(), which asserts that the step is one of
 * the arrows below (docs/design.rst draws them).  The input side and the
 * service side overlap (a pipelined head arrives while the previous
 * request is served): `state` is where the loop is with the client;
 * whether a worker holds the channel is `busy`.
 *
 *   HANDSHAKE -> IDLE, LINGER, CLOSED  with TLS, before the first request
 *   IDLE   -> HEAD, DONE, CLOSED        between requests
 *   HEAD   -> BODY, IDLE, PAUSED, DONE, CLOSED
 *   BODY   -> IDLE, PAUSED, DONE, CLOSED
 *   PAUSED -> IDLE, HEAD, BODY, PAUSED, DONE, CLOSED
 *   DONE   -> LINGER, CLOSED
 *   LINGER -> CLOSED
 */
typedef enum {
    WC_CONN_IDLE = 0,   /* no byte of a next request yet */
    WC_CONN_HEAD,       /* a head arriving, from its first byte (an empty
                           line's too): the head clock runs */
    WC_CONN_BODY,       /* its body arriving */
    WC_CONN_PAUSED,     /* backlog full: not reading; bytes read and not
                           yet parsed wait in `leftover` */
    WC_CONN_DONE,       /* no further request is parsed (what arrives is
                           discarded): what was received is answered,
                           then the connection lingers */
    WC_CONN_LINGER,     /* all owed output written and the write side
                           shut: input read and discarded until EOF, a
                           byte bound or the linger time, then closed */
    WC_CONN_CLOSED,     /* the socket is closed */
    WC_CONN_HANDSHAKE,  /* TLS: the handshake, before the first request
                           (tls.c); no busy part; channel_timeout bounds
                           it from the accept */
    WC_CONN_NSTATES
} wc_conn_state;

/* Assertions on the lifecycle: on in the test and sanitizer builds
 * (-DWC_CHECKS), compiled out of release builds. */
#ifdef WC_CHECKS
void wc_assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));
#define WC_ASSERT(e) \
    ((e) ? (void)0 : wc_assert_fail(#e, __FILE__, __LINE__))
#else
/* Not evaluated, but its names count as used. */
#define WC_ASSERT(e) ((void)sizeof(e))
#endif

/* Events a worker posts to the loop (b->ev, under b->lock); the loop
 * drains them in wc_channel_kicked.  ROOM and IDLE are posted only when
 * the loop asked for them (b->wants), or IDLE when the server sheds the
 * busy parts of quiescent connections (wc_server_t.shed). */
enum {
    WC_EV_CLOSE = 1,    /* a response ended the connection */
    WC_EV_ROOM = 2,     /* the backlog is low again */
    WC_EV_IDLE = 4,     /* no worker holds the channel any more */
};

/* The busy part of a connection: everything it needs while a request
 * arrives, waits, is served or answered, and while it lingers.  The loop
 * allocates it at the first byte of a request and frees it once the
 * connection is quiescent again (channel.c: shed), so that an idle
 * keep-alive connection holds only its small wc_channel_t.  A worker
 * reaches it only while it holds the channel (a task, a kick, held-back
 * output), and the loop never frees it then: `ch->b` never changes under
 * a worker. */
struct wc_busy_s {
    /* Loop thread only. */
    wc_request_t *req;          /* being received (HEAD, BODY) */
    uint64_t head_at;           /* ms: first byte of the head */
    uint64_t linger_end;        /* ms: LINGER closes then at the latest */
    char *leftover;             /* read, not parsed: the backlog was full */
    size_t leftover_len;
    char *wblk;                 /* a block of a file sendfile refuses, */
    size_t wblk_len, wblk_off;  /* being written from memory */
    unsigned continue_owed : 1; /* 100 Continue once no worker holds it */
    unsigned sending : 1;       /* the client may still be sending: the
                                   close must linger */

    /* Shared: under `lock`. */
    pthread_mutex_t lock;
    wc_waiter_t *waiters;       /* threads parked on this channel */
    wc_request_t *pend_head, *pend_tail;
    int npending;               /* complete requests waiting */
    int nspooled;               /* of which with a body in a temp file */
    size_t pend_bytes;          /* their memory */
    int writers;                /* app threads inside write() */
    int busy;                   /* queued for, or held by, a worker */
    wc_outq_t out;
    int writing;                /* the socket refused bytes: the loop waits
                                   for POLLOUT, later output queues */
    int kicked;                 /* on srv->kick list */
    wc_channel_t *kick_next;
    wc_channel_t *defer_next;
    unsigned ev : 3;            /* WC_EV_*: posted by workers */
    unsigned wants : 3;         /* WC_EV_ROOM | WC_EV_IDLE the loop waits
                                   for */
    unsigned broken : 1;        /* no more writes: reset, closed, error */
    unsigned peer_eof : 1;      /* the client shut its side */
    unsigned deferred : 1;      /* on srv->defer_head: output held back */
    /* ms, monotonic: the last byte the client took, or when output began
     * to wait in an empty queue.  A stall is timed from it; reads never
     * move it. */
    _Atomic uint64_t out_at;
    /* Set by the loop when a stop finds the request in service the last
     * one it will take (nothing else read): its response says close. */
    atomic_int stop_close;
    wc_channel_t *task_next;    /* srv task queue (under queue lock) */
    wc_h2_t *h2;                /* loop: an HTTP/2 connection's session
                                   (h2.c), NULL on HTTP/1 */
};

/* Busy parts kept by quiescent connections while the server holds at
 * most this many; past it, a connection gives its busy part back as soon
 * as it is quiescent (a worker tells the loop).  Enough for the
 * keep-alive connections of a busy server not to allocate one per
 * request; few enough that 10,000 idle connections stay small. */
#define WC_KEEP_BUSY 1024

/* A connection.  What an idle keep-alive connection costs: the fields
 * below (no libuv handle: the socket is in the server's own epoll set,
 * srv->epfd); the rest is the busy part.  The loop does the socket's
 * reads and its own writes itself (recv, sendmsg, sendfile) on readiness
 * (wc_channel_io); workers write with sendmsg under b->lock when nothing
 * is queued before them. */
struct wc_channel_s {
    wc_server_t *srv;
    wc_busy_t *b;               /* NULL while quiescent and shed */
    wc_channel_t *prev, *next;  /* srv->channels, then srv->closed (loop) */
    uint64_t in_at;             /* loop: ms of the last byte read, or of
                                   the state's start; the idle clock */
    wc_tls_conn_t *tls;         /* loop: the TLS session, NULL on plain
                                   connections (tls.c) */
    atomic_int refs;            /* loop 1 until close_cb; task 1; kick 1;
                                   held-back output 1 */
    int fd;
    uint8_t state;              /* wc_conn_state (loop) */
    uint16_t listener;          /* index in srv->listeners */
    uint8_t events;             /* EPOLLIN | EPOLLOUT wanted (loop) */
    uint8_t polled;             /* what epoll has: `events`, with EPOLLOUT
                                   for EPOLLIN while read_out (loop) */
    uint8_t read_out;           /* a TLS read waits for the socket to take
                                   bytes (wc_channel_read_waits_out) */
    /* The peer, formatted by workers: family 0 (unix), 4 or 6. */
    uint8_t peer_family;
    uint16_t peer_port;
    unsigned char peer_addr[16];
    /* WC_GONE_*: what client_disconnected() reports, from any thread at
     * any time (the busy part may be gone by then).  Set by the loop. */
    _Atomic uint8_t gone;
    uint8_t kind;               /* WC_KIND_*: set by the loop before any
                                   worker sees the channel */
    uint8_t ready;              /* on srv->ready (loop) */
    uint8_t secure;             /* a TLS connection, or a stream of one:
                                   set before any worker sees the channel */
};

/* What a wc_channel_t is.  A connection is NEW until its first bytes say
 * which protocol it speaks (the HTTP/2 preface, or ALPN on TLS); an
 * HTTP/2 stream is a channel of its own (h2.c) that workers serve like a
 * connection with one request, whose output the loop frames. */
enum {
    WC_KIND_NEW = 0,    /* no byte read yet (HTTP/2 enabled) */
    WC_KIND_H1,         /* HTTP/1 */
    WC_KIND_H2,         /* HTTP/2: b->h2 holds the session */
    WC_KIND_STREAM,     /* one HTTP/2 stream (not in srv->channels, no
                           socket: fd -1) */
};

enum {
    WC_GONE_NO = 0,
    WC_GONE_EOF = 1,    /* the client shut its side */
    WC_GONE_CLOSED = 2, /* the connection is closed */
};

struct sockaddr;
/* Loop thread: a connection accepted on listener `index` (fd is non-
 * blocking; peer is what accept gave).  Returns 0, or a negative error
 * with fd closed. */
int wc_channel_open(wc_server_t *srv, int fd, int index,
                    const struct sockaddr *peer);

void wc_channel_close(wc_channel_t *ch);
/* The output side wants POLLOUT (the socket refused bytes), or no more. */
void wc_channel_want_write(wc_channel_t *ch, int on);
/* The socket is ready: epoll's events for it. */
void wc_channel_io(wc_channel_t *ch, unsigned events);
/* Once an iteration: free what wc_channel_close left for later. */
void wc_channel_finish_closes(wc_server_t *srv);
/* The loop's turn: read the TLS channels on srv->ready.  Returns how many
 * are on it again. */
uint32_t wc_channel_run_ready(wc_server_t *srv);
/* A stop: give back the list's references. */
void wc_channel_drop_ready(wc_server_t *srv);
/* After a read, or when reading resumes: OpenSSL holds records epoll
 * cannot report; put the channel on srv->ready. */
void wc_channel_check_ready(wc_channel_t *ch);
/* A TLS read returned WC_TLS_NEEDS_OUT: poll for writable instead of
 * readable until the socket takes bytes. */
void wc_channel_read_waits_out(wc_channel_t *ch);
/* At a readiness event: if a read waited for the socket to take bytes
 * and it now may, poll as before; returns 1 then (read at once: EPOLLIN
 * was not polled). */
int wc_channel_read_resumes(wc_channel_t *ch, unsigned events);
void wc_channel_unref(wc_channel_t *ch);
void wc_channel_flush(wc_channel_t *ch);
void wc_channel_kicked(wc_channel_t *ch);
void wc_channel_stop(wc_channel_t *ch, int hard);
void wc_channel_maybe_close(wc_channel_t *ch);
/* Once a second: timeouts, stop grace and lingering (closes the channel
 * when its time is up). */
void wc_channel_sweep(wc_channel_t *ch, uint64_t now);
/* Caller holds b->lock: wake every thread parked on the channel. */
void wc_channel_wake_waiters(wc_channel_t *ch);
/* Worker side (any thread, no GIL needed): */
/* The next request to serve, or NULL: the worker lets the channel go
 * (output it held back is sent, the loop told if it waits for that).
 * *more: further requests wait behind the one returned. */
wc_request_t *wc_channel_take(wc_channel_t *ch, int *more);
/* The response just served ends the connection: the worker lets the
 * channel go, and the loop closes it once the output is written. */
void wc_channel_end(wc_channel_t *ch);
/* May the response being written promise keep-alive?  `asked`: what the
 * request asked for (its keep_alive bit). */
int wc_channel_keep_alive(wc_channel_t *ch, int asked);
/* A task nobody will serve (a hard stop's end) lets the channel go. */
void wc_channel_drop_task(wc_channel_t *ch);
/* Fairness: the worker sends what it held back and re-queues the task. */
void wc_channel_yield(wc_channel_t *ch);
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
/* Loop: HTTP/2 streams as channels (h2.c).  init: a stream of
 * connection `conn` (one reference, the loop's; a busy part); dispatch:
 * its complete request to the workers; close: the stream is over
 * (workers see the client gone); the caller then drops its reference. */
int wc_channel_stream_init(wc_channel_t *ch, wc_channel_t *conn) WC_WUR;
void wc_channel_stream_dispatch(wc_channel_t *ch, wc_request_t *r);
void wc_channel_stream_close(wc_channel_t *ch);
/* Loop: an HTTP/2 connection has nothing more to send: close it the way
 * an HTTP/1 one closes after its last response. */
void wc_channel_done(wc_channel_t *ch);
void wc_channel_kick(wc_channel_t *ch);
int wc_channel_disconnected(wc_channel_t *ch);
/* Worker: bytes the connection still holds and will never send (the
 * client is gone), else 0. */
uint64_t wc_channel_unsent(wc_channel_t *ch);
void wc_channel_writer_enter(wc_channel_t *ch);
void wc_channel_writer_leave(wc_channel_t *ch);
int wc_channel_has_writers(wc_channel_t *ch);
void wc_channel_wait_writers(wc_channel_t *ch);

/* ---- metrics.c: the server's counters ---------------------------------- */

/* One slot of counters: a fixed array of 64-bit cells, in memory the
 * server is given (a slot of a shared mmap, so that one scrape sees every
 * worker process: docs/metrics.rst) or in the server's own struct when
 * metrics are off (the increments then cost the same and need no
 * branch).  Cells are relaxed atomics, read by any thread or process at
 * any time.  Each cell has one kind of writer, so most increments need no
 * locked instruction:
 *
 *   loop   the loop thread alone: wc_m_own_add (a load and a store)
 *   qlock  under srv->qlock: the same
 *   GIL    workers holding the GIL: wc_m_gil_add (wc.h: the same, or
 *          fetch_add on a free-threaded build)
 *   any    workers and app threads: wc_m_add (fetch_add, relaxed)
 *
 * Gauges (from WC_M_GAUGES) say what the process has now; the rest are
 * counters that only grow, and WC_M_QUEUE_MAX, which only rises. */
#define WC_M_NCLASS 5           /* 1xx .. 5xx */
#define WC_M_NMETHOD 8          /* GET HEAD POST PUT DELETE PATCH OPTIONS
                                   other */
#define WC_M_NBUCKET 15         /* the duration buckets, +Inf included */

enum {
    WC_M_ACCEPTED = 0,          /* loop: connections accepted */
    WC_M_LIMITED,               /* loop: times accepting stopped at
                                   connection_limit */
    WC_M_BYTES_IN,              /* loop: bytes read from clients */
    WC_M_BYTES_OUT_LOOP,        /* loop: bytes the loop wrote */
    WC_M_BYTES_OUT,             /* any: bytes workers wrote */
    WC_M_SPOOLED,               /* loop: request bodies in a temp file */
    WC_M_DURATION_NS,           /* GIL: the durations' sum */
    WC_M_REQUESTS,              /* GIL: [class][method] */
    WC_M_DURATION = WC_M_REQUESTS + WC_M_NCLASS * WC_M_NMETHOD,
                                /* GIL: per bucket, not cumulative */
    WC_M_QUEUE_MAX = WC_M_DURATION + WC_M_NBUCKET,
                                /* qlock: the task queue's high-water mark */
    WC_M_GAUGES,
    WC_M_CONNECTIONS = WC_M_GAUGES, /* loop: open connections */
    WC_M_QUEUE,                 /* qlock: tasks waiting */
    WC_M_BUSY,                  /* GIL: worker threads serving */
    WC_M_PARKED,                /* any: threads parked on a full output
                                   queue */
    WC_M_THREADS,               /* set once: the worker threads */
    WC_M_NFIELDS
};

/* A slot's size: whole cache lines, so that two processes' slots never
 * share one. */
#define WC_M_SLOT_BYTES \
    ((WC_M_NFIELDS * sizeof(uint64_t) + 63) / 64 * 64)

typedef _Atomic uint64_t wc_metric_t;

/* A cell only the calling thread writes (loop, or under a lock). */
static inline void
wc_m_own_add(wc_metric_t *m, int field, uint64_t n)
{
    uint64_t v = atomic_load_explicit(&m[field], memory_order_relaxed);
    atomic_store_explicit(&m[field], v + n, memory_order_relaxed);
}

static inline void
wc_m_set(wc_metric_t *m, int field, uint64_t v)
{
    atomic_store_explicit(&m[field], v, memory_order_relaxed);
}

/* A cell several threads write. */
static inline void
wc_m_add(wc_metric_t *m, int field, int64_t n)
{
    atomic_fetch_add_explicit(&m[field], (uint64_t)n, memory_order_relaxed);
}

/* Worker, GIL held: one response is over.  `status` is the code sent (0:
 * none, the client left first: not counted); r->done_ns is when the
 * request was complete (uv_hrtime). */
void wc_metrics_request(wc_metric_t *m, const wc_request_t *r, int status);

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
    int http2;                  /* h2c prior knowledge and ALPN h2 */
    uint64_t h2_max_streams;
    uint64_t h2_window;
    uint64_t h2_frame;
    uint64_t h2_header_list;
    int tls;                    /* certfile set: the listeners but the
                                   plain ones speak TLS */
    char ident[128];            /* "" when none */
    char server_line[160];      /* "Server: <ident>\r\n", or "" */
    size_t server_line_len;
    char error_tag[160];        /* "(generated by X)" */
    char tmpdir[4096];          /* for spooled bodies and spilled output:
                                   tempfile.gettempdir() at creation */
};

struct wc_listener_s {
    uv_poll_t poll;             /* readiness of the listening socket */
    wc_server_t *srv;
    int index;
    int is_unix;
    int fd;
    int open;
    int owned;                  /* ours to shut: refuse at once on stop */
    int plain;                  /* plain HTTP, on a server with TLS
                                   (insecure_listen) */
    int held;                   /* not polled: at connection_limit, or
                                   accept ran out of fds (retried) */
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
    wc_metric_t *m;             /* the counters: a slot of the metrics
                                   buffer, or own_m */
    void *owner;                /* the ServerObject; never dereferenced
                                   by the loop thread */

    wc_listener_t *listeners;
    int nlisteners;
    /* The TLS context of every listener but the plain ones (certfile
     * set), or NULL.  Loop thread once it runs (a reload swaps it there:
     * tls_next); workers look at a channel's `secure` instead. */
    wc_tls_t *tls;

    /* Loop thread only. */
    int epfd;                   /* the connections' epoll set */
    uv_poll_t epoll;            /* libuv's watch on it */
    uv_idle_t reap;             /* releases closed channels next turn */
    /* TLS channels whose next records OpenSSL read ahead (epoll cannot
     * report them), a reference each, read at the next turn (channel.c:
     * wc_channel_run_ready, from the idle handle). */
    uv_idle_t ready_idle;
    wc_channel_t **ready;
    uint32_t nready, ready_cap;
    wc_channel_t *channels;     /* list head */
    wc_channel_t *closed;       /* closed, memory not yet released */
    uint64_t nchannels;
    int limit_logged;
    uint64_t stop_at;           /* ms: a graceful stop began; 0 none */
    uint64_t nbusy_parts;       /* channels holding a busy part */
    atomic_int shed;            /* many connections: workers tell the
                                   loop when one goes quiescent, so that
                                   its busy part is freed */
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
    char close_why[32];         /* close()'s reason ("SIGTERM" from a
                                   worker process's main thread), "" */
    int running;
    int depth_warn;             /* queue depth to log, 0 if none */
    int depth_due;              /* the sweep asks for it to be logged */
    int async_live;             /* uv_async_send is allowed */
    pthread_cond_t log_cond;    /* the log thread waits here */
    int log_stop;
    int log_running;            /* the log thread is in its loop (qlock) */
    wc_channel_t *kick_head;    /* channels a worker wants looked at */
    wc_channel_t *defer_head;   /* channels with output held back */
    wc_logmsg_t *log_head, *log_tail;
    wc_tls_t *tls_next;         /* a reloaded TLS context for the loop */
    wc_seg_t *release_head;     /* sent reference segments (zero copy) */
    uint64_t release_bytes;     /* their bytes */

    /* One record per worker thread of what it serves (dispatch.c): set
     * at creation, each written by its worker only, read without a lock
     * by the hung-request check. */
    wc_slot_t *slots;
    int nslots;
    wc_metric_t own_m[WC_M_NFIELDS];    /* the counters without metrics */
};

int wc_server_init(wc_server_t *srv);
int wc_server_listen(wc_server_t *srv, int index, int fd, int is_unix,
                     int owned, int plain);
int wc_server_run(wc_server_t *srv, int sigfd);
/* The calling thread to SCHED_BATCH (from SCHED_OTHER only); *old and
 * *old_param, when given, receive what to restore. */
struct sched_param;
void wc_thread_batch(int *old, struct sched_param *old_param);
void wc_server_request_close(wc_server_t *srv, const char *why);
void wc_server_channel_closed(wc_server_t *srv);
/* A channel was closed: release it at the start of the next iteration. */
void wc_server_reap_soon(wc_server_t *srv);
void wc_server_ready_soon(wc_server_t *srv);
/* Any thread: new connections use `t` from now on (the server takes the
 * caller's reference). */
void wc_server_tls_swap(wc_server_t *srv, wc_tls_t *t);
void wc_server_log(wc_server_t *srv, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void wc_server_destroy(wc_server_t *srv);
uint64_t wc_now_ms(void);

/* ---- tls.c: TLS with OpenSSL (loop thread, but wc_tls_new) ----------- */

/* A build without OpenSSL (setup.py: WC_NO_TLS=1) has no TLS: wc_tls_new
 * fails with WC_TLS_MISSING, and _core.HAVE_TLS is False. */
#ifdef WC_NO_TLS
#define WC_HAVE_TLS 0
#else
#define WC_HAVE_TLS 1
#endif
#define WC_TLS_MISSING                                                      \
    "this build of waitress_c has no TLS (it was built without OpenSSL 3, " \
    "as the manylinux_2_28 wheels are): install it where glibc is 2.34 or " \
    "newer to get the manylinux_2_34 wheel, build it from source against " \
    "OpenSSL 3 (libssl-dev), or terminate TLS in a proxy"

/* What the application learns of a connection's TLS: gathered by the loop
 * once the handshake is done, read by workers (environ.c), immutable, one
 * allocation with the strings after it.  Every request of the connection
 * holds a reference (parser.c frees it with the request). */
struct wc_tls_info_s {
    atomic_int refs;
    const char *protocol;       /* "TLSv1.3" */
    const char *cipher;
    const char *verify;         /* "SUCCESS", "NONE" */
    const char *s_dn;           /* client certificate: NULL without */
    const char *i_dn;
    const char *cert;           /* PEM */
    const char *sni;            /* the name the client asked for (SNI):
                                   NULL without */
    const char *resumed;        /* "Initial", or "Resumed": a session of
                                   the cache (mod_ssl's words) */
    char data[];
};

static inline void
wc_tls_info_unref(wc_tls_info_t *info)
{
    if (info && atomic_fetch_sub(&info->refs, 1) == 1)
        free(info);
}

enum { WC_TLS_VERIFY_NONE = 0, WC_TLS_VERIFY_OPTIONAL, WC_TLS_VERIFY_REQUIRED };

typedef struct {
    const char *certfile;
    const char *keyfile;
    const char *password;       /* NULL: none */
    const char *ca_certs;       /* NULL: none */
    const char *ciphers;        /* NULL: tls.c's DEFAULT_CIPHERS */
    int cert_reqs;              /* WC_TLS_VERIFY_* */
    int min_version;            /* 12 or 13 */
    int h2;                     /* offer h2 in ALPN */
    int session_cache;          /* sessions kept for resumption; 0: none */
    int session_timeout;        /* seconds a session may be resumed for */
    /* More certificates, each chosen for the names it has when a client
     * asks for one of them (SNI); certfile serves every other name, and
     * clients that name none.  Each key is its own file or the
     * certificate's; `password` is every encrypted key's. */
    const char *const *sni_certfiles;
    const char *const *sni_keyfiles;
    int n_sni;
} wc_tls_opts_t;

/* Any thread: the server's TLS context.  Returns 0, or -1 with a one-line
 * reason in err; a warning that does not stop the server (an expired
 * certificate) goes to warn ("" when none). */
int wc_tls_new(wc_tls_t **out, const wc_tls_opts_t *o, char *err,
               size_t errlen, char *warn, size_t warnlen);
void wc_tls_free(wc_tls_t *t);
/* Loop thread, per connection. */
wc_tls_conn_t *wc_tls_conn_new(wc_tls_t *t, int fd);
void wc_tls_conn_free(wc_tls_conn_t *c);
enum {
    WC_TLS_DONE = 0,
    WC_TLS_WANT_READ = 1,
    WC_TLS_WANT_WRITE = 2,
    WC_TLS_PLAIN = 3,           /* the client speaks plain HTTP */
};
/* Returns a WC_TLS_* or a negative error (the handshake failed). */
int wc_tls_handshake(wc_tls_conn_t *c);
/* After the handshake: did ALPN choose h2? */
int wc_tls_alpn_h2(wc_tls_conn_t *c);
/* A new reference to the connection's facts (after the handshake). */
wc_tls_info_t *wc_tls_info(wc_tls_conn_t *c);
/* wc_tls_read: the read must write first (OpenSSL answers a TLS 1.3
 * KeyUpdate inside SSL_read) and the socket refused it.  Not an errno. */
#define WC_TLS_NEEDS_OUT ((ssize_t)-100000)
/* Like recv: bytes, 0 at the end of stream, -EAGAIN, WC_TLS_NEEDS_OUT,
 * or -errno.
 * `idle`: the caller waits for a new message, which usually comes in one
 * short record: a short record ends the read (no read that would fail). */
ssize_t wc_tls_read(wc_tls_conn_t *c, char *buf, size_t n, int idle);
/* Did the last read (or the handshake) leave records inside OpenSSL
 * that the socket no longer shows (read ahead, then a read that stopped
 * for room)?  Read them without waiting for epoll. */
int wc_tls_has_pending(wc_tls_conn_t *c);
/* The largest record's payload: a worker writes a response itself only
 * when it fits in one (channel_out.c). */
#define WC_TLS_RECORD 16384
/* Like sendmsg: the bytes taken (fewer than offered: the socket is full;
 * offer the same bytes first again), -EAGAIN when none, or -errno.  The
 * loop or a worker, under the channel's lock. */
ssize_t wc_tls_writev(wc_tls_conn_t *c, const struct iovec *iov, int n);
/* A clean close: send close_notify if the socket takes it now. */
void wc_tls_close_notify(wc_tls_conn_t *c);

/* ---- h2.c: HTTP/2 connections and their streams (loop thread) ------ */

/* The 24 bytes an HTTP/2 client starts with (RFC 9113 3.4). */
#define WC_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
/* Loop: the connection speaks HTTP/2 from now on; `p`, `n`: the bytes
 * already read (the preface), or none after ALPN.  Closes it on error. */
void wc_h2_start(wc_channel_t *ch, const char *p, size_t n);
void wc_h2_io(wc_channel_t *ch, unsigned events);
void wc_h2_sweep(wc_channel_t *ch, uint64_t now);
void wc_h2_stop(wc_channel_t *ch);
/* Loop: the connection is closing: every stream ends. */
void wc_h2_free(wc_channel_t *ch);
/* Loop: a worker kicked a stream channel. */
void wc_h2_stream_kicked(wc_channel_t *ch);
/* Worker (no GIL needed): the response head of a stream, `head` packed
 * as wc_h2_pack_* writes it; `nobody`: no DATA follows.  Returns 0, or
 * UV_EPIPE when the stream is gone. */
int wc_h2_stream_head(wc_channel_t *ch, const char *head, size_t len,
                      int nobody) WC_WUR;
/* Worker: the response is whole (the loop ends the stream, not reset
 * it). */
void wc_h2_stream_complete(wc_channel_t *ch);

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
/* The worker threads' records (cfg.threads of them): 0 or -ENOMEM;
 * freed with the server. */
int wc_dispatch_slots_init(wc_server_t *srv) WC_WUR;
void wc_dispatch_slots_free(wc_server_t *srv);

#endif /* WC_LOOP_H */
