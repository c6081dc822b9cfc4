/* channel.c: one client connection.  Accepts it, reads and parses its
 * requests, queues complete ones for the worker pool in order (bounded:
 * the pipelining backlog), keeps it alive or closes it, times it out, and
 * stops it gracefully.  The output side is channel_out.c.
 *
 * GIL map: nothing here touches Python.  Everything runs on the loop
 * thread, except wc_channel_kick (workers, ch->lock held).  Only the loop
 * closes.
 */
#include "wc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Stop parsing (and reading) when this many complete requests, or this
 * many bytes of them, wait behind the running one (pipelining / lookahead
 * backlog); what was read but not parsed waits in ch->leftover. */
#define PENDING_MAX 32
#define PENDING_BYTES (256 * 1024)
#define STOP_GRACE_MS 1000

static const char continue_line[] = WC_CONTINUE_LINE;

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_close(uv_handle_t *h);
static void feed(wc_channel_t *ch, const char *p, size_t n);
static void pause_reading(wc_channel_t *ch);
static void resume_reading(wc_channel_t *ch);

uint64_t
wc_now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static int
pending_limit(const wc_channel_t *ch)
{
    int la = ch->srv->cfg.lookahead;
    return la > PENDING_MAX ? la : PENDING_MAX;
}

/* Memory a queued request holds. */
static size_t
request_size(const wc_request_t *r)
{
    return sizeof(*r) + r->head.cap + r->body.mem.cap
           + (size_t)r->headers_cap * sizeof(wc_header_t);
}

/* ch->lock held.  Is the backlog full (stop parsing), or low enough again
 * (resume)? */
static int
backlog_full(const wc_channel_t *ch)
{
    return ch->npending > pending_limit(ch) || ch->pend_bytes > PENDING_BYTES;
}

int
wc_channel_backlog_low(const wc_channel_t *ch)
{
    return ch->npending <= pending_limit(ch) / 2
           && ch->pend_bytes <= PENDING_BYTES / 2;
}

/* ch->lock held.  A worker took `r` off the queue. */
void
wc_channel_release_pending(wc_channel_t *ch, wc_request_t *r)
{
    size_t n = request_size(r);
    ch->npending--;
    ch->pend_bytes = ch->pend_bytes > n ? ch->pend_bytes - n : 0;
}

/* `*taken` tells whether the connection was taken off the listener (a
 * failure before that leaves it with libuv, which then stops polling the
 * listener until the next accept). */
int
wc_channel_accept(wc_server_t *srv, uv_stream_t *server, int index,
                  int *taken)
{
    wc_listener_t *ls = &srv->listeners[index];
    wc_channel_t *ch = calloc(1, sizeof(*ch));
    int rv;

    *taken = 0;
    if (ch == NULL)
        return UV_ENOMEM;
    ch->srv = srv;
    ch->listener = index;
    ch->fresh = 1;
    atomic_init(&ch->refs, 1);
    atomic_init(&ch->last_activity, wc_now_ms());
    if (ls->is_unix)
        rv = uv_pipe_init(&srv->loop, &ch->h.pipe, 0);
    else
        rv = uv_tcp_init(&srv->loop, &ch->h.tcp);
    if (rv < 0) {
        free(ch);
        return rv;
    }
    ch->h.handle.data = ch;
    wc_outq_init(&ch->out);
    pthread_mutex_init(&ch->lock, NULL);
    /* From here the handle is live: errors go through close. */
    ch->next = srv->channels;
    if (srv->channels)
        srv->channels->prev = ch;
    srv->channels = ch;
    srv->nchannels++;

    rv = uv_accept(server, &ch->h.stream);
    *taken = 1;
    if (rv < 0)
        goto error;
    uv_fileno(&ch->h.handle, &ch->fd);
    if (!ls->is_unix) {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        /* TCP_NODELAY: inherited from the listener (server.py). */
        rv = uv_tcp_getpeername(&ch->h.tcp, (struct sockaddr *)&ss, &len);
        if (rv < 0)
            goto error;   /* the client is already gone */
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            ch->peer_family = 6;
            memcpy(ch->peer_addr, &a->sin6_addr, 16);
            ch->peer_port = ntohs(a->sin6_port);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            ch->peer_family = 4;
            memcpy(ch->peer_addr, &a->sin_addr, 4);
            ch->peer_port = ntohs(a->sin_port);
        }
    }
    rv = uv_read_start(&ch->h.stream, on_alloc, on_read);
    if (rv < 0)
        goto error;
    ch->reading = 1;
    /* The request is usually there already (TCP_DEFER_ACCEPT on our
     * listeners): read it now rather than after another epoll round. */
    ssize_t n;
    do {
        n = recv(ch->fd, srv->readbuf, sizeof(srv->readbuf), 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        uv_buf_t buf = uv_buf_init(srv->readbuf, (unsigned)n);
        on_read(&ch->h.stream, n, &buf);
    } else if (n == 0) {
        on_read(&ch->h.stream, UV_EOF, NULL);
    }
    return 0;

error:
    wc_channel_close(ch);
    return rv;
}

static void
on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    wc_channel_t *ch = h->data;
    /* One read buffer per loop: on_read consumes it before the next read. */
    buf->base = ch->srv->readbuf;
    buf->len = sizeof(ch->srv->readbuf);
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wc_channel_t *ch = s->data;

    if (nread > 0) {
        atomic_store_explicit(&ch->last_activity, wc_now_ms(),
                              memory_order_relaxed);
        if (!ch->stop_parsing)
            feed(ch, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    if (nread != UV_EOF) {
        if (ch->srv->cfg.log_socket_errors && nread != UV_ECONNRESET)
            wc_server_log(ch->srv, 40, "Socket error: %s",
                          uv_strerror((int)nread));
        wc_channel_close(ch);
        return;
    }
    /* EOF: serve what was fully received, then close.  A request cut off
     * half-way is dropped. */
    ch->eof = 1;
    uv_read_stop(s);
    ch->reading = 0;
    ch->stop_parsing = 1;
    pthread_mutex_lock(&ch->lock);
    ch->saw_eof = 1;
    pthread_mutex_unlock(&ch->lock);
    wc_request_free(ch->req);
    ch->req = NULL;
    wc_channel_maybe_close(ch);
}

/* Hand a complete request to the channel's queue; the first one in an idle
 * channel becomes a task.  Returns 1 when the backlog is full: the caller
 * stops parsing. */
static int
queue_request(wc_channel_t *ch, wc_request_t *r)
{
    int push = 0;
    pthread_mutex_lock(&ch->lock);
    if (ch->close_when_flushed || ch->broken) {
        pthread_mutex_unlock(&ch->lock);
        wc_request_free(r);
        return 0;
    }
    if (ch->pend_tail)
        ch->pend_tail->next = r;
    else
        ch->pend_head = r;
    ch->pend_tail = r;
    ch->npending++;
    ch->pend_bytes += request_size(r);
    ch->continue_wanted = 0;
    ch->fresh = 0;
    if (!ch->busy) {
        ch->busy = 1;
        atomic_fetch_add(&ch->refs, 1);
        atomic_fetch_add(&ch->srv->nbusy, 1);
        push = 1;
    }
    /* Marked paused in the same hold: a worker that takes the request at
     * once must see it, or nobody would ask the loop to read again. */
    int backlog = backlog_full(ch);
    if (backlog)
        ch->read_paused = 1;
    pthread_mutex_unlock(&ch->lock);
    if (push)
        wc_dispatch_push(ch->srv, ch);
    if (backlog && ch->reading) {
        uv_read_stop(&ch->h.stream);
        ch->reading = 0;
    }
    return backlog;
}

/* Report an error as a pseudo-request: it is answered in order, after the
 * requests before it, and nothing after it is read. */
static void
fail_request(wc_channel_t *ch)
{
    wc_request_t *r = ch->req;
    ch->req = NULL;
    ch->stop_parsing = 1;
    pause_reading(ch);
    queue_request(ch, r);
}

static void
send_continue(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    if (!ch->busy && ch->npending == 0 && ch->out.bytes == 0
        && !ch->writing) {
        if (wc_outq_append(&ch->out, continue_line,
                           sizeof(continue_line) - 1) < 0)
            ch->broken = 1;
    } else {
        ch->continue_wanted = 1;   /* the worker sends it once idle */
    }
    pthread_mutex_unlock(&ch->lock);
    wc_channel_flush(ch);
}

static void
feed(wc_channel_t *ch, const char *p, size_t n)
{
    const wc_config_t *cfg = &ch->srv->cfg;

    while (n > 0 && !ch->stop_parsing) {
        wc_request_t *r = ch->req;
        size_t used = 0;
        int complete = 0;

        if (r == NULL) {
            r = ch->req = wc_request_new(cfg->inbuf_overflow);
            if (r == NULL) {
                wc_server_log(ch->srv, 40, "Out of memory: connection "
                                           "dropped");
                wc_channel_close(ch);
                return;
            }
            ch->pstate = WC_PARSE_HEAD;
            ch->head_start = wc_now_ms();
        }
        switch (ch->pstate) {
        case WC_PARSE_HEAD:
            used = wc_head_scan(r, p, n, &complete, cfg);
            if (r->error_status) {
                fail_request(ch);
                return;
            }
            if (!complete)
                break;
            wc_parse_head(r, cfg);
            if (r->error_status) {
                fail_request(ch);
                return;
            }
            if (r->chunked) {
                ch->pstate = WC_PARSE_CHUNKED;
            } else if (r->body_remaining > 0) {
                ch->pstate = WC_PARSE_BODY;
                /* One allocation for a body that stays in memory. */
                if (r->body_remaining <= cfg->inbuf_overflow
                    && wc_buf_reserve(&r->body.mem,
                                      (size_t)r->body_remaining) < 0) {
                    wc_request_error(r, 500, "Out of memory");
                    fail_request(ch);
                    return;
                }
            } else {
                goto done;
            }
            break;
        case WC_PARSE_BODY:
            used = n < r->body_remaining ? n : (size_t)r->body_remaining;
            if (wc_spool_write(&r->body, p, used) < 0) {
                wc_request_error(r, 500, "Could not store the request body");
                fail_request(ch);
                return;
            }
            r->body_remaining -= used;
            if (r->body_remaining == 0)
                goto done;
            break;
        case WC_PARSE_CHUNKED:
            used = wc_chunked_feed(r, p, n, &complete, cfg);
            if (r->error_status) {
                fail_request(ch);
                return;
            }
            if (complete)
                goto done;
            break;
        }
        p += used;
        n -= used;
        continue;
done:
        p += used;
        n -= used;
        ch->req = NULL;
        if (!r->keep_alive || r->close_after
            || atomic_load(&ch->srv->stopping))
            ch->stop_parsing = 1;   /* nothing after it is served */
        if (queue_request(ch, r) && n > 0 && !ch->stop_parsing) {
            /* Backlog full: keep the rest for when it drains. */
            ch->leftover = malloc(n);
            if (ch->leftover == NULL) {
                wc_server_log(ch->srv, 40, "Out of memory: connection "
                                           "dropped");
                wc_channel_close(ch);
                return;
            }
            memcpy(ch->leftover, p, n);
            ch->leftover_len = n;
            return;
        }
    }
    /* A body is still to come: 100 Continue if the client waits for it. */
    if (ch->req && ch->pstate != WC_PARSE_HEAD && ch->req->expect_continue) {
        ch->req->expect_continue = 0;
        send_continue(ch);
    }
}

static void
pause_reading(wc_channel_t *ch)
{
    if (ch->closing)
        return;
    if (ch->reading) {
        uv_read_stop(&ch->h.stream);
        ch->reading = 0;
    }
    pthread_mutex_lock(&ch->lock);
    ch->read_paused = 1;
    pthread_mutex_unlock(&ch->lock);
}

/* The backlog has drained: parse what was kept, then read again. */
static void
resume_reading(wc_channel_t *ch)
{
    if (ch->reading || ch->stop_parsing || ch->eof || ch->closing)
        return;
    pthread_mutex_lock(&ch->lock);
    int paused = ch->read_paused;
    ch->read_paused = 0;
    pthread_mutex_unlock(&ch->lock);
    if (!paused)
        return;
    if (ch->leftover) {
        char *p = ch->leftover;
        size_t n = ch->leftover_len;
        ch->leftover = NULL;
        ch->leftover_len = 0;
        feed(ch, p, n);
        free(p);
        if (ch->closing || ch->stop_parsing || ch->leftover)
            return;
        pthread_mutex_lock(&ch->lock);
        paused = ch->read_paused;
        pthread_mutex_unlock(&ch->lock);
        if (paused)
            return;
    }
    if (uv_read_start(&ch->h.stream, on_alloc, on_read) == 0)
        ch->reading = 1;
}

/* Close once everything owed is written, if the channel must close. */
void
wc_channel_maybe_close(wc_channel_t *ch)
{
    if (ch->closing)
        return;
    pthread_mutex_lock(&ch->lock);
    int idle = !ch->busy && ch->npending == 0 && ch->out.bytes == 0
               && !ch->writing;
    int broken = ch->broken;
    int must = ch->close_when_flushed || ch->eof
               || (ch->srv->stopping && ch->req == NULL && !ch->fresh);
    pthread_mutex_unlock(&ch->lock);
    if (broken || (idle && must))
        wc_channel_close(ch);
}

/* The loop's side of a kick: a worker queued output, finished, wants the
 * connection closed, or has room for more pipelined requests. */
void
wc_channel_kicked(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    ch->kicked = 0;
    int want_read = ch->want_read;
    int closing = ch->close_when_flushed;
    ch->want_read = 0;
    pthread_mutex_unlock(&ch->lock);
    if (!ch->closing) {
        if (closing && !ch->stop_parsing) {
            ch->stop_parsing = 1;
            pause_reading(ch);
            wc_request_free(ch->req);
            ch->req = NULL;
        }
        if (want_read)
            resume_reading(ch);
        wc_channel_flush(ch);
    }
    wc_channel_unref(ch);
}

/* Graceful: every request received completely is answered (the last one
 * with Connection: close), a request partly received is read to its end
 * and answered, and then the connection closes; a connection that has
 * received nothing since its last response closes now, and a new one that
 * has received nothing yet gets a moment to send its request (see
 * wc_channel_timed_out).  Hard: close now. */
void
wc_channel_stop(wc_channel_t *ch, int hard)
{
    if (ch->closing)
        return;
    if (hard) {
        wc_channel_close(ch);
        return;
    }
    if (ch->req == NULL && !ch->fresh) {
        ch->stop_parsing = 1;
        pause_reading(ch);
        free(ch->leftover);
        ch->leftover = NULL;
        wc_channel_maybe_close(ch);
    }
}

void
wc_channel_close(wc_channel_t *ch)
{
    if (ch->closing)
        return;
    ch->closing = 1;
    pthread_mutex_lock(&ch->lock);
    ch->broken = 1;
    wc_request_t *r = ch->pend_head;
    /* A queued task still holds the channel: it finds `broken` and drops
     * its requests; here we drop the ones nobody holds. */
    if (!ch->busy) {
        ch->pend_head = ch->pend_tail = NULL;
        ch->npending = 0;
        ch->pend_bytes = 0;
    } else {
        r = NULL;
    }
    wc_channel_wake_waiters(ch);
    pthread_mutex_unlock(&ch->lock);
    while (r) {
        wc_request_t *next = r->next;
        wc_request_free(r);
        r = next;
    }
    wc_request_free(ch->req);
    ch->req = NULL;
    free(ch->leftover);
    ch->leftover = NULL;
    if (ch->prev)
        ch->prev->next = ch->next;
    else
        ch->srv->channels = ch->next;
    if (ch->next)
        ch->next->prev = ch->prev;
    ch->prev = ch->next = NULL;
    uv_close(&ch->h.handle, on_close);
}

static void
on_close(uv_handle_t *h)
{
    wc_channel_t *ch = h->data;
    wc_server_t *srv = ch->srv;
    srv->nchannels--;
    wc_channel_unref(ch);
    wc_server_channel_closed(srv);
}

/* Drop one reference; the last one frees.  The loop's reference is only
 * dropped in on_close, so memory never outlives a live handle. */
void
wc_channel_unref(wc_channel_t *ch)
{
    if (atomic_fetch_sub(&ch->refs, 1) != 1)
        return;
    wc_request_t *r = ch->pend_head;
    while (r) {
        wc_request_t *next = r->next;
        wc_request_free(r);
        r = next;
    }
    wc_outq_free(&ch->out);
    wc_channel_give_back(ch);
    free(ch->leftover);
    pthread_mutex_destroy(&ch->lock);
    free(ch);
}

/* Has this connection timed out?  channel_timeout bounds three things:
 * how long it may stay idle (no request being served or waiting, nothing
 * read or written), how long output may wait without a byte being taken
 * by the client (a reader that stopped pins no worker: the channel closes
 * and a parked worker sees the client gone), and how long a request head
 * may take to arrive from its first byte (a head trickled in a byte at a
 * time).  A request being served that sends nothing is never timed out,
 * nor is a body that keeps arriving.  Loop thread. */
int
wc_channel_timed_out(wc_channel_t *ch, uint64_t now)
{
    uint64_t limit = ch->srv->cfg.channel_timeout_ms;
    uint64_t last = atomic_load_explicit(&ch->last_activity,
                                         memory_order_relaxed);
    /* A stopping server gives a new connection that has sent nothing a
     * second, not channel_timeout, to send its request. */
    if (ch->fresh && ch->req == NULL && atomic_load(&ch->srv->stopping)
        && limit > STOP_GRACE_MS)
        limit = STOP_GRACE_MS;
    int quiet = now > last && now - last > limit;
    int slow_head = ch->req && ch->pstate == WC_PARSE_HEAD
                    && ch->req->head.len > 0 && now > ch->head_start
                    && now - ch->head_start > limit;
    if (ch->closing || (!quiet && !slow_head))
        return 0;
    pthread_mutex_lock(&ch->lock);
    int idle = !ch->busy && ch->npending == 0;
    int stalled = ch->out.bytes > 0 || ch->writing;
    pthread_mutex_unlock(&ch->lock);
    return (quiet && (idle || stalled)) || (slow_head && idle);
}

/* Workers, GIL held or not; caller holds ch->lock.  Ask the loop to look
 * at this channel. */
void
wc_channel_kick(wc_channel_t *ch)
{
    if (ch->kicked)
        return;
    ch->kicked = 1;
    atomic_fetch_add(&ch->refs, 1);
    wc_server_t *srv = ch->srv;
    pthread_mutex_lock(&srv->qlock);
    ch->kick_next = srv->kick_head;
    srv->kick_head = ch;
    if (srv->async_live)
        uv_async_send(&srv->async);
    pthread_mutex_unlock(&srv->qlock);
}
