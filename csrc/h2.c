/* h2.c: HTTP/2 connections (RFC 9113) with the system libnghttp2.
 *
 * Owns a connection's nghttp2 session (wc_h2_t, in ch->b->h2) and its
 * streams.  The loop feeds what it reads to nghttp2_session_mem_recv and
 * queues what nghttp2_session_mem_send gives in the connection's own
 * output queue, which channel_out.c writes (through TLS when it is one).
 *
 * A stream is a channel of its own (WC_KIND_STREAM, the first member of
 * stream_t), so that workers serve it exactly as an HTTP/1 connection
 * with one request: wc_channel_take, wc_channel_send (which, for a
 * stream, only queues and kicks the loop), parking over the stream's
 * high watermark.  Its request (headers and whole body, like HTTP/1's) is
 * dispatched when the client ends the stream, so the streams of one
 * connection are served concurrently, each by its own worker.  The
 * response head comes packed (wc_h2_stream_head: a three-digit status,
 * then for each field its name, NUL, value, NUL; names already lower case
 * and without connection-specific fields); the loop submits it, and a
 * data provider reads the stream's queued bytes as the flow-control
 * windows allow (NGHTTP2_ERR_DEFERRED while the queue is empty, resumed
 * at the next kick).  A stream whose worker lets it go without a whole
 * response (the app raised after the head, the client went away) is
 * reset with INTERNAL_ERROR.
 *
 * Limits: nghttp2's own (header block and CONTINUATION count, SETTINGS
 * and outbound ACK floods, stream reset rate) and ours: the header list
 * (h2_max_header_list_size: 431), the body (max_request_body_size: 413),
 * RESETS_MAX resets or EMPTY_DATA_MAX empty DATA frames a connection
 * (GOAWAY ENHANCE_YOUR_CALM), and the
 * stall and idle clocks (channel_timeout, wc_h2_sweep).
 *
 * GIL map: loop thread, no GIL, but wc_h2_stream_head and
 * wc_h2_stream_complete, which workers call (GIL held or not) and which
 * touch only the stream's fields under its b->lock.
 */
#include "loop.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Output of the connection queued for the socket before nghttp2 is asked
 * for more: enough for a full socket buffer, small enough that a stream's
 * bytes stay in its own queue (and its worker parks) rather than here. */
#define PUMP_MAX (256 * 1024)
/* Rounds of "ask nghttp2, write" per event before the connection lets the
 * others have the loop (it asks for POLLOUT to come back). */
#define PUMP_ROUNDS 16
#define READS_PER_EVENT 4
/* RST_STREAM frames a client may send on one connection in a burst (a
 * rapid reset attack costs the server a request each), and how many more
 * each second adds: then GOAWAY ENHANCE_YOUR_CALM.  A browser cancels
 * a few streams now and then; nothing legitimate resets thousands. */
#define RESETS_MAX 1000
#define RESETS_PER_SEC 33
/* DATA frames with no payload and no END_STREAM, likewise: each costs
 * the server a frame's work and the client 9 bytes and no window (the
 * empty-frame flood, CVE-2019-9518's kind).  A client may flush an empty
 * frame now and then; nothing legitimate sends thousands. */
#define EMPTY_DATA_MAX 1000
#define EMPTY_DATA_PER_SEC 100

typedef struct stream_s stream_t;

struct wc_h2_s {
    wc_channel_t *ch;           /* the connection */
    nghttp2_session *sess;
    stream_t *streams;          /* those with a stream_t (loop) */
    uint32_t nstreams;
    uint32_t resets;            /* RST_STREAM frames received, less
                                   RESETS_PER_SEC a second */
    uint32_t empty_data;        /* empty DATA frames without END_STREAM,
                                   less EMPTY_DATA_PER_SEC a second */
};

struct stream_s {
    wc_channel_t ch;            /* first: the workers' channel; its last
                                   reference frees the whole stream */
    /* Loop thread only. */
    wc_h2_t *h;                 /* NULL once the stream has ended */
    stream_t *prev, *next;      /* h->streams */
    int32_t id;
    wc_request_t *req;          /* being received, until dispatched */
    wc_buf_t fields;            /* received fields: u32 name length, u32
                                   value length, name, value */
    uint32_t nfields;
    uint64_t field_bytes;       /* RFC 9113 6.5.2's measure */
    unsigned dispatched : 1;
    unsigned submitted : 1;     /* the response head went to nghttp2 */
    unsigned waiting : 1;       /* the data provider said DEFERRED */
    unsigned reset : 1;         /* we reset it */
    unsigned too_big : 1;
    unsigned had_data : 1;
    unsigned is_head : 1;       /* HEAD: no DATA, whatever the worker
                                   sends (an error page) */
    /* Under ch.b->lock: set by the worker, taken by the loop. */
    char *head;
    size_t head_len;
    int nobody;
    int complete;               /* the response is whole */
};

static void pump(wc_h2_t *h);
static void end_stream(wc_h2_t *h, stream_t *s);
static void read_some(wc_h2_t *h);

/* ---- requests in ---------------------------------------------------------- */

static int
is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

/* Field i's name and value in a fields buffer, from *off (advanced). */
static void
next_field(const char *base, size_t *off, const char **name, uint32_t *nlen,
           const char **value, uint32_t *vlen)
{
    memcpy(nlen, base + *off, 4);
    memcpy(vlen, base + *off + 4, 4);
    *name = base + *off + 8;
    *value = *name + *nlen;
    *off += 8 + (size_t)*nlen + *vlen;
}

/* The stream's header block is whole: make its wc_request_t as the HTTP/1
 * parser would (the same environ follows).  Pseudo-fields give the method
 * and target; :authority becomes Host when there is none; cookie fields
 * are joined with "; " (RFC 9113 8.2.3).  Errors become the request's
 * error_status.  Returns 0, or UV_ENOMEM. */
static int
build_request(stream_t *s)
{
    wc_request_t *r = s->req;
    const char *base = s->fields.data;
    size_t off = 0, method = 0, path = 0, auth = 0, cookie = 0;
    uint32_t method_len = 0, path_len = 0, auth_len = 0;
    uint32_t nplain = 0, ncookies = 0, has_host = 0;
    wc_buf_t jar = {0};
    int rv = UV_ENOMEM;

    if (s->too_big) {
        wc_request_error(r, 431, "Request Header Fields Too Large");
        return 0;
    }
    for (uint32_t i = 0; i < s->nfields; i++) {
        const char *n, *v;
        uint32_t nl, vl;
        next_field(base, &off, &n, &nl, &v, &vl);
        size_t at = (size_t)(v - base);
        if (nl > 0 && n[0] == ':') {
            if (is(n, nl, ":method")) {
                method = at;
                method_len = vl;
            } else if (is(n, nl, ":path")) {
                path = at;
                path_len = vl;
            } else if (is(n, nl, ":authority")) {
                auth = at;
                auth_len = vl;
            }
            continue;
        }
        if (is(n, nl, "cookie")) {
            if ((ncookies++ && wc_buf_append(&jar, "; ", 2) < 0)
                || wc_buf_append(&jar, v, vl) < 0)
                goto done;
            continue;
        }
        has_host |= is(n, nl, "host");
        nplain++;
    }
    /* The joined cookie goes after the fields, in the same buffer. */
    if (ncookies) {
        cookie = s->fields.len;
        if (wc_buf_append(&s->fields, jar.data, jar.len) < 0)
            goto done;
    }
    uint32_t nh = nplain + (ncookies > 0) + (!has_host && auth_len > 0);
    r->headers = calloc(nh ? nh : 1, sizeof(wc_header_t));
    if (r->headers == NULL)
        goto done;
    r->headers_cap = nh;
    /* The request owns the bytes from here; pointers into them are final. */
    r->head = s->fields;
    memset(&s->fields, 0, sizeof(s->fields));
    base = r->head.data;
    off = 0;
    for (uint32_t i = 0; i < s->nfields; i++) {
        const char *n, *v;
        uint32_t nl, vl;
        next_field(base, &off, &n, &nl, &v, &vl);
        if ((nl > 0 && n[0] == ':') || is(n, nl, "cookie"))
            continue;
        wc_header_t *h = &r->headers[r->nheaders++];
        h->name = n;
        h->name_len = nl;
        h->value = v;
        h->value_len = vl;
    }
    if (ncookies) {
        wc_header_t *h = &r->headers[r->nheaders++];
        h->name = "cookie";
        h->name_len = 6;
        h->value = base + cookie;
        h->value_len = (uint32_t)jar.len;
    }
    if (!has_host && auth_len > 0) {
        wc_header_t *h = &r->headers[r->nheaders++];
        h->name = "host";
        h->name_len = 4;
        h->value = base + auth;
        h->value_len = auth_len;
    }
    r->version = 20;
    r->keep_alive = 1;
    r->method = base + method;
    r->method_len = method_len;
    s->is_head = method_len == 4 && memcmp(r->method, "HEAD", 4) == 0;
    /* nghttp2 has checked the pseudo-fields (RFC 9113 8.3.1): a method,
     * and a path but for CONNECT, which we do not serve. */
    if (method_len == 0 || path_len == 0) {
        r->method = "CONNECT";
        r->method_len = 7;
        r->target = "/";
        r->target_len = 1;
        wc_request_error(r, 405, "CONNECT is not supported");
    } else {
        r->target = base + path;
        r->target_len = path_len;
        (void)wc_parse_target(r);   /* sets error_status when bad */
    }
    rv = 0;
done:
    wc_buf_free(&jar);
    return rv;
}

/* The request goes to the workers (whole, or an error to answer). */
static void
dispatch(wc_h2_t *h, stream_t *s)
{
    wc_request_t *r = s->req;
    s->req = NULL;
    s->dispatched = 1;
    /* The body's length is known now; environ.c gives a "chunked"
     * request's CONTENT_LENGTH as what was received. */
    if (s->had_data && r->error_status == 0)
        r->chunked = 1;
    wc_channel_stream_dispatch(&s->ch, r);
}

static stream_t *
stream_of(wc_h2_t *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->sess, id);
}

static int
on_begin_headers(nghttp2_session *sess, const nghttp2_frame *f, void *user)
{
    wc_h2_t *h = user;
    wc_channel_t *ch = h->ch;
    if (f->hd.type != NGHTTP2_HEADERS
        || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (wc_channel_stream_init(&s->ch, ch) < 0) {
        free(s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    s->h = h;
    s->id = f->hd.stream_id;
    s->req = wc_request_new(ch->srv->cfg.inbuf_overflow);
    if (s->req != NULL) {
        s->req->body.dir = ch->srv->cfg.tmpdir;
        if (ch->tls)
            s->req->tls = wc_tls_info(ch->tls);
    }
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    h->nstreams++;
    if (s->req == NULL
        || nghttp2_session_set_stream_user_data(sess, s->id, s) != 0) {
        end_stream(h, s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int
on_header(nghttp2_session *sess, const nghttp2_frame *f,
          const uint8_t *name, size_t nlen, const uint8_t *value,
          size_t vlen, uint8_t flags, void *user)
{
    wc_h2_t *h = user;
    stream_t *s = stream_of(h, f->hd.stream_id);
    if (s == NULL || s->req == NULL || f->hd.type != NGHTTP2_HEADERS
        || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;   /* trailers: ignored, as HTTP/1's */
    s->field_bytes += nlen + vlen + 32;
    if (s->field_bytes > h->ch->srv->cfg.h2_header_list) {
        s->too_big = 1;     /* answered 431 at the end of the block */
        return 0;
    }
    uint32_t n32 = (uint32_t)nlen, v32 = (uint32_t)vlen;
    if (wc_buf_append(&s->fields, &n32, 4) < 0
        || wc_buf_append(&s->fields, &v32, 4) < 0
        || wc_buf_append(&s->fields, name, nlen) < 0
        || wc_buf_append(&s->fields, value, vlen) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->nfields++;
    return 0;
}

static int
on_data(nghttp2_session *sess, uint8_t flags, int32_t id,
        const uint8_t *data, size_t len, void *user)
{
    wc_h2_t *h = user;
    stream_t *s = stream_of(h, id);
    if (s == NULL || s->req == NULL || s->dispatched)
        return 0;   /* answered already (413, 431): discarded */
    wc_request_t *r = s->req;
    s->had_data = 1;
    if (r->body.len + len > h->ch->srv->cfg.max_body) {
        wc_request_error(r, 413, "exceeds max request body size");
        dispatch(h, s);
        return 0;
    }
    if (wc_spool_write(&r->body, (const char *)data, len) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int
on_frame(nghttp2_session *sess, const nghttp2_frame *f, void *user)
{
    wc_h2_t *h = user;
    stream_t *s = NULL;
    if (f->hd.type == NGHTTP2_DATA && f->hd.length <= f->data.padlen
        && !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)
        && ++h->empty_data == EMPTY_DATA_MAX) {
        nghttp2_session_terminate_session(sess, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
    }
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        s = stream_of(h, f->hd.stream_id);
        if (s == NULL || s->req == NULL || s->dispatched)
            return 0;
        if (f->hd.type == NGHTTP2_HEADERS
            && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (build_request(s) < 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            if (s->req->error_status) {
                dispatch(h, s);     /* answered at once */
                return 0;
            }
        }
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
            dispatch(h, s);
        return 0;
    case NGHTTP2_RST_STREAM:
        if (++h->resets == RESETS_MAX)
            nghttp2_session_terminate_session(sess,
                                              NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
    default:
        return 0;
    }
}

static int
on_close(nghttp2_session *sess, int32_t id, uint32_t code, void *user)
{
    wc_h2_t *h = user;
    stream_t *s = stream_of(h, id);
    if (s != NULL)
        end_stream(h, s);
    return 0;
}

/* ---- responses out --------------------------------------------------------- */

/* nghttp2 asks for a DATA frame's payload: the stream's queued bytes
 * (memory, or a file: wsgi.file_wrapper, spilled output).  Loop thread,
 * inside nghttp2_session_mem_send. */
static ssize_t
read_data(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t len,
          uint32_t *flags, nghttp2_data_source *src, void *user)
{
    stream_t *s = src->ptr;
    wc_busy_t *b = s->ch.b;
    size_t got = 0;
    int failed = 0;
    pthread_mutex_lock(&b->lock);
    while (got < len && b->out.head) {
        wc_seg_t *g = b->out.head;
        size_t k = g->len - g->off;
        if (k > len - got)
            k = len - got;
        if (k > 0 && g->fd >= 0) {
            ssize_t r = pread(g->fd, buf + got, k, g->file_off);
            if (r <= 0) {
                failed = 1;     /* shorter than promised */
                break;
            }
            k = (size_t)r;
        } else if (k > 0) {
            memcpy(buf + got, g->base + g->off, k);
        }
        wc_outq_consume(&b->out, k);
        got += k;
    }
    if (got) {
        atomic_store_explicit(&b->out_at, wc_now_ms(), memory_order_relaxed);
        wc_channel_wake_waiters(&s->ch);
        wc_channel_give_back(&s->ch);
    }
    int done = b->out.head == NULL && s->complete;
    failed |= b->broken;
    pthread_mutex_unlock(&b->lock);
    if (failed)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;   /* reset */
    if (done)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    else if (got == 0) {
        s->waiting = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)got;
}

/* The worker's head, as HEADERS: the status, then its fields. */
static void
submit(wc_h2_t *h, stream_t *s)
{
    wc_busy_t *b = s->ch.b;
    pthread_mutex_lock(&b->lock);
    char *head = s->head;
    size_t len = s->head_len;
    int nobody = s->nobody || s->is_head;
    s->head = NULL;
    pthread_mutex_unlock(&b->lock);
    s->submitted = 1;
    size_t n = 1;
    for (size_t i = 3; i < len; i++)
        n += head[i] == '\0';
    n = 1 + (n - 1) / 2;
    nghttp2_nv *nva = calloc(n, sizeof(*nva));
    if (nva == NULL || len < 3) {
        free(nva);
        free(head);
        nghttp2_submit_rst_stream(h->sess, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
        s->reset = 1;
        return;
    }
    nva[0].name = (uint8_t *)":status";
    nva[0].namelen = 7;
    nva[0].value = (uint8_t *)head;
    nva[0].valuelen = 3;
    size_t k = 1;
    char *p = head + 3, *end = head + len;
    while (p < end && k < n) {
        char *name = p;
        char *value = name + strlen(name) + 1;
        if (value >= end)
            break;
        p = value + strlen(value) + 1;
        nva[k].name = (uint8_t *)name;
        nva[k].namelen = strlen(name);
        nva[k].value = (uint8_t *)value;
        nva[k].valuelen = strlen(value);
        k++;
    }
    nghttp2_data_provider prd;
    prd.source.ptr = s;
    prd.read_callback = read_data;
    /* nghttp2 copies the fields. */
    if (nghttp2_submit_response(h->sess, s->id, nva, k,
                                nobody ? NULL : &prd) != 0) {
        nghttp2_submit_rst_stream(h->sess, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
        s->reset = 1;
    }
    free(nva);
    free(head);
}

int
wc_h2_stream_head(wc_channel_t *ch, const char *head, size_t len, int nobody)
{
    stream_t *s = (stream_t *)ch;
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return UV_ENOMEM;
    memcpy(copy, head, len);
    pthread_mutex_lock(&ch->b->lock);
    if (ch->b->broken || s->head != NULL) {
        pthread_mutex_unlock(&ch->b->lock);
        free(copy);
        return UV_EPIPE;
    }
    s->head = copy;
    s->head_len = len;
    s->nobody = nobody;
    wc_channel_kick(ch);
    pthread_mutex_unlock(&ch->b->lock);
    return 0;
}

void
wc_h2_stream_complete(wc_channel_t *ch)
{
    stream_t *s = (stream_t *)ch;
    pthread_mutex_lock(&ch->b->lock);
    s->complete = 1;
    wc_channel_kick(ch);
    pthread_mutex_unlock(&ch->b->lock);
}

void
wc_h2_stream_kicked(wc_channel_t *ch)
{
    stream_t *s = (stream_t *)ch;
    wc_busy_t *b = ch->b;
    pthread_mutex_lock(&b->lock);
    b->kicked = 0;
    b->ev = 0;
    int busy = b->busy, complete = s->complete;
    int head = s->head != NULL;
    pthread_mutex_unlock(&b->lock);
    wc_h2_t *h = s->h;
    if (ch->state == WC_CONN_CLOSED || h == NULL) {
        wc_channel_unref(ch);
        return;
    }
    if (!s->submitted && head)
        submit(h, s);
    if (s->submitted && s->waiting) {
        s->waiting = 0;
        nghttp2_session_resume_data(h->sess, s->id);
    }
    if (!busy && !complete && !s->reset) {
        /* The worker is done and the response is not whole. */
        s->reset = 1;
        nghttp2_submit_rst_stream(h->sess, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
    pump(h);
    wc_channel_unref(ch);
}

/* ---- the connection ---------------------------------------------------------- */

/* A stream is over (closed by nghttp2, or the connection closes): the
 * worker serving it sees the client gone; the loop's reference goes. */
static void
end_stream(wc_h2_t *h, stream_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->nstreams--;
    s->h = NULL;
    nghttp2_session_set_stream_user_data(h->sess, s->id, NULL);
    wc_request_free(s->req);
    s->req = NULL;
    wc_buf_free(&s->fields);
    wc_channel_stream_close(&s->ch);
    pthread_mutex_lock(&s->ch.b->lock);
    free(s->head);
    s->head = NULL;
    pthread_mutex_unlock(&s->ch.b->lock);
    wc_channel_unref(&s->ch);
}

/* Ask nghttp2 for what it has to send and write it, while the socket
 * takes it; then, when the session is over, end the connection. */
static void
pump(wc_h2_t *h)
{
    wc_channel_t *ch = h->ch;
    wc_busy_t *b = ch->b;
    for (int round = 0;; round++) {
        int more = 1;
        pthread_mutex_lock(&b->lock);
        uint64_t queued = b->out.bytes;
        int broken = b->broken;
        pthread_mutex_unlock(&b->lock);
        if (broken) {
            wc_channel_close(ch);
            return;
        }
        while (queued < PUMP_MAX) {
            const uint8_t *d;
            ssize_t n = nghttp2_session_mem_send(h->sess, &d);
            if (n < 0) {
                wc_channel_close(ch);
                return;
            }
            if (n == 0) {
                more = 0;
                break;
            }
            pthread_mutex_lock(&b->lock);
            int rv = wc_outq_append(&b->out, (const char *)d, (size_t)n);
            if (b->out.bytes == (uint64_t)n)
                atomic_store_explicit(&b->out_at, wc_now_ms(),
                                      memory_order_relaxed);
            queued = b->out.bytes;
            pthread_mutex_unlock(&b->lock);
            if (rv < 0) {
                wc_channel_close(ch);
                return;
            }
        }
        wc_channel_flush(ch);
        if (ch->state != WC_CONN_IDLE)
            return;
        pthread_mutex_lock(&b->lock);
        int writing = b->writing;
        pthread_mutex_unlock(&b->lock);
        if (writing)
            return;     /* POLLOUT brings us back */
        if (!more)
            break;
        if (round == PUMP_ROUNDS) {
            /* Let the loop serve others; the writable socket calls back
             * at once. */
            wc_channel_want_write(ch, 1);
            return;
        }
    }
    if (!nghttp2_session_want_read(h->sess)
        && !nghttp2_session_want_write(h->sess))
        wc_channel_done(ch);    /* closes once the queue is written */
}

void
wc_h2_start(wc_channel_t *ch, const char *p, size_t n)
{
    const wc_config_t *cfg = &ch->srv->cfg;
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    wc_h2_t *h = calloc(1, sizeof(*h));
    ch->kind = WC_KIND_H2;
    if (h == NULL || nghttp2_session_callbacks_new(&cb) != 0
        || nghttp2_option_new(&opt) != 0)
        goto nomem;
    h->ch = ch;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
                                                            on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    /* nghttp2's flood limits, stated rather than assumed. */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_continuations(opt, 8);
    /* nghttp2's own bucket as a backstop behind ours (on_frame). */
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * RESETS_MAX,
                                               RESETS_PER_SEC);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    if (nghttp2_session_server_new2(&h->sess, cb, h, opt) != 0)
        goto nomem;
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    cb = NULL;
    opt = NULL;
    ch->b->h2 = h;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
         (uint32_t)cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)cfg->h2_window},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, (uint32_t)cfg->h2_frame},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
         (uint32_t)cfg->h2_header_list},
    };
    if (nghttp2_submit_settings(h->sess, NGHTTP2_FLAG_NONE, iv,
                                sizeof(iv) / sizeof(iv[0])) != 0)
        goto nomem;
    /* The connection's own window as large as a stream's: one upload at
     * a time goes as fast as one stream may. */
    if (cfg->h2_window > 65535)
        (void)nghttp2_session_set_local_window_size(
            h->sess, NGHTTP2_FLAG_NONE, 0, (int32_t)cfg->h2_window);
    if (n > 0 && nghttp2_session_mem_recv(h->sess, (const uint8_t *)p, n) < 0) {
        wc_channel_close(ch);
        return;
    }
    /* What follows may already be read (by OpenSSL, with the handshake's
     * last flight), where no readiness would report it. */
    read_some(h);
    if (ch->state == WC_CONN_IDLE)
        pump(h);
    return;

nomem:
    if (cb)
        nghttp2_session_callbacks_del(cb);
    if (opt)
        nghttp2_option_del(opt);
    if (h && h->sess)
        nghttp2_session_del(h->sess);
    free(h);
    if (ch->b)
        ch->b->h2 = NULL;
    wc_server_log(ch->srv, 40, "Out of memory: connection dropped");
    wc_channel_close(ch);
}

/* Read what the socket has and hand it to nghttp2. */
static void
read_some(wc_h2_t *h)
{
    wc_channel_t *ch = h->ch;
    wc_server_t *srv = ch->srv;
    for (int i = 0; i < READS_PER_EVENT; i++) {
        ssize_t n;
        if (ch->tls) {
            n = wc_tls_read(ch->tls, srv->readbuf, sizeof(srv->readbuf), 0);
        } else {
            do {
                n = recv(ch->fd, srv->readbuf, sizeof(srv->readbuf), 0);
            } while (n < 0 && errno == EINTR);
            if (n < 0)
                n = -errno;
        }
        if (n == -EAGAIN || n == -EWOULDBLOCK)
            return;
        if (n == WC_TLS_NEEDS_OUT) {
            wc_channel_read_waits_out(ch);
            return;
        }
        if (n <= 0) {
            /* The client's end (an HTTP/2 client does not half-close) or
             * an error: what is in flight is lost. */
            if (n < 0 && srv->cfg.log_socket_errors && n != -ECONNRESET)
                wc_server_log(srv, 40, "Socket error: %s",
                              uv_strerror((int)n));
            atomic_store_explicit(&ch->gone, WC_GONE_EOF,
                                  memory_order_relaxed);
            wc_channel_close(ch);
            return;
        }
        ch->in_at = wc_now_ms();
        wc_m_own_add(srv->m, WC_M_BYTES_IN, (uint64_t)n);
        if (nghttp2_session_mem_recv(h->sess, (const uint8_t *)srv->readbuf,
                                     (size_t)n) < 0) {
            /* Fatal (a flood, a bad preface, no memory): nghttp2 says to
             * close now.  Protocol errors are not reported here: nghttp2
             * queues their GOAWAY itself and pump ends the session. */
            wc_channel_close(ch);
            return;
        }
        if (n < (ssize_t)sizeof(srv->readbuf) || ch->state != WC_CONN_IDLE)
            break;
    }
    if (ch->tls)
        wc_channel_check_ready(ch);  /* records OpenSSL read ahead */
}

void
wc_h2_io(wc_channel_t *ch, unsigned events)
{
    wc_h2_t *h = ch->b->h2;
    int trouble = (events & (EPOLLHUP | EPOLLERR)) != 0;
    int resumed = wc_channel_read_resumes(ch, events);
    if (ch->state != WC_CONN_IDLE)
        return;
    if ((ch->events & EPOLLOUT) && ((events & EPOLLOUT) || trouble)) {
        wc_channel_flush(ch);
        if (ch->state != WC_CONN_IDLE)
            return;
    }
    if ((ch->events & EPOLLIN) && ((events & EPOLLIN) || trouble || resumed)) {
        read_some(h);
        if (ch->state != WC_CONN_IDLE)
            return;
    } else if (trouble && !(ch->events & EPOLLOUT)) {
        wc_channel_close(ch);
        return;
    }
    pump(h);
}

/* Once a second.  channel_timeout bounds a connection on which no
 * stream is being served (none open, or requests the client does not
 * finish: GOAWAY, then closed) and output that waits without the client
 * taking a byte: the socket's, or a stream's whose window the client
 * keeps closed (closed at once). */
void
wc_h2_sweep(wc_channel_t *ch, uint64_t now)
{
    wc_h2_t *h = ch->b->h2;
    uint64_t limit = ch->srv->cfg.channel_timeout_ms;
    wc_busy_t *b = ch->b;
    h->resets = h->resets > RESETS_PER_SEC ? h->resets - RESETS_PER_SEC : 0;
    h->empty_data = h->empty_data > EMPTY_DATA_PER_SEC
        ? h->empty_data - EMPTY_DATA_PER_SEC : 0;
    pthread_mutex_lock(&b->lock);
    int waiting = b->out.bytes > 0 || b->writing;
    uint64_t out_at = atomic_load_explicit(&b->out_at, memory_order_relaxed);
    pthread_mutex_unlock(&b->lock);
    if (waiting && now > out_at && now - out_at > limit) {
        wc_channel_close(ch);
        return;
    }
    int serving = 0;
    for (stream_t *s = h->streams; s; s = s->next) {
        wc_busy_t *sb = s->ch.b;
        pthread_mutex_lock(&sb->lock);
        int queued = sb->out.bytes > 0;
        serving |= queued || sb->busy;
        uint64_t at = atomic_load_explicit(&sb->out_at, memory_order_relaxed);
        pthread_mutex_unlock(&sb->lock);
        if (queued && now > at && now - at > limit) {
            wc_channel_close(ch);   /* the client never opens its window */
            return;
        }
    }
    /* No worker on any stream and nothing to send: whatever is open waits
     * for the client (a request it never finishes), and the idle clock
     * runs from its last byte, as HTTP/1's body clock does. */
    if (serving)
        return;
    uint64_t since = ch->in_at > out_at ? ch->in_at : out_at;
    if (now > since && now - since > limit) {
        nghttp2_session_terminate_session(h->sess, NGHTTP2_NO_ERROR);
        pump(h);
    }
}

/* A graceful stop: GOAWAY with the last stream accepted; those streams
 * are finished, and the session then ends (pump). */
void
wc_h2_stop(wc_channel_t *ch)
{
    wc_h2_t *h = ch->b->h2;
    nghttp2_submit_goaway(h->sess, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->sess),
                          NGHTTP2_NO_ERROR, NULL, 0);
    pump(h);
}

void
wc_h2_free(wc_channel_t *ch)
{
    wc_h2_t *h = ch->b->h2;
    ch->b->h2 = NULL;
    while (h->streams)
        end_stream(h, h->streams);
    nghttp2_session_del(h->sess);
    free(h);
}
