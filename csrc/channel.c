/* channel.c: one client connection and its lifecycle.  Accepts it, reads
 * and parses its requests (parser.c's wc_request_feed), queues complete
 * ones for the worker pool in order (bounded: the pipelining backlog),
 * hands them to workers one at a time, and ends the connection: lingering
 * close after a response, timeouts, graceful and hard stops.  The output
 * side is channel_out.c.
 *
 * The lifecycle is one field, ch->state (wc.h lists the states and their
 * arrows), changed only by set_state(), which asserts the step and does
 * what the new state needs of the socket (reading on or off).  Keep-alive
 * has one owner: the request's keep_alive bit, set by the parser, only
 * ever cleared afterwards (here during a stop, by response.c for the
 * app's framing), and consumed in one place: the worker's wc_channel_end
 * when the response said close, which the loop turns into DONE and then
 * a lingering close.
 *
 * Workers never change the lifecycle: they post events (WC_EV_*) under
 * ch->lock and kick the loop, which drains them in wc_channel_kicked.
 *
 * GIL map: nothing here touches Python.  Everything runs on the loop
 * thread, except the worker side (wc_channel_take, wc_channel_end,
 * wc_channel_yield, wc_channel_kick), which runs on workers, GIL held or
 * not, and touches only the fields under ch->lock.  Only the loop closes.
 */
#include "loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Stop parsing (and reading) when this many complete requests, or this
 * many bytes of them, or one spooled body, wait behind the running one
 * (pipelining / lookahead backlog); what was read but not parsed waits in
 * ch->leftover. */
#define PENDING_MAX 32
#define PENDING_BYTES (256 * 1024)
#define SPOOLED_MAX 1
/* A stopping server gives each connection this long to send or finish the
 * request it may have on the wire. */
#define STOP_GRACE_MS 1000
/* Lingering close: how long, and how many bytes, input is read and
 * discarded after the write side is shut, so that the close never resets
 * a response the client is still reading. */
#define LINGER_MS 2000
#define LINGER_BYTES (1024 * 1024)

static const char continue_line[] = WC_CONTINUE_LINE;

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_close(uv_handle_t *h);
static void feed(wc_channel_t *ch, const char *p, size_t n);
static void finish_input(wc_channel_t *ch);
static void enter_done(wc_channel_t *ch);
static void linger(wc_channel_t *ch);

#ifdef WC_CHECKS
void
wc_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "waitress_c: assertion failed: %s (%s:%d)\n", expr, file,
            line);
    abort();
}
#endif

uint64_t
wc_now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* ---- the lifecycle ------------------------------------------------------ */

/* The arrows of wc.h's diagram, one bit per target state. */
#define S(x) (1u << WC_CONN_##x)
static const unsigned allowed[WC_CONN_NSTATES] = {
    [WC_CONN_IDLE] = S(HEAD) | S(DONE) | S(CLOSED),
    [WC_CONN_HEAD] = S(BODY) | S(IDLE) | S(PAUSED) | S(DONE) | S(CLOSED),
    [WC_CONN_BODY] = S(IDLE) | S(PAUSED) | S(DONE) | S(CLOSED),
    [WC_CONN_PAUSED] = S(IDLE) | S(HEAD) | S(BODY) | S(PAUSED) | S(DONE)
                       | S(CLOSED),
    [WC_CONN_DONE] = S(LINGER) | S(CLOSED),
    [WC_CONN_LINGER] = S(CLOSED),
    [WC_CONN_CLOSED] = 0,
};
#undef S

/* Does the loop read the socket in this state? */
static int
reads_in(wc_conn_state s)
{
    return s == WC_CONN_IDLE || s == WC_CONN_HEAD || s == WC_CONN_BODY
           || s == WC_CONN_LINGER;
}

/* The one place the state changes.  Starts or stops reading to match the
 * new state (a failed uv_read_start closes the connection); a state's
 * clock starts here. */
static void
set_state(wc_channel_t *ch, wc_conn_state to)
{
    wc_conn_state from = ch->state;
    WC_ASSERT(to < WC_CONN_NSTATES);
    WC_ASSERT(allowed[from] & (1u << to));
    ch->state = to;
    if (to == WC_CONN_CLOSED)
        return;
    uint64_t now = wc_now_ms();
    if (to == WC_CONN_HEAD)
        ch->head_at = now;
    ch->in_at = now;
    int want = reads_in(to);
    if (want && !ch->reading) {
        if (uv_read_start(&ch->h.stream, on_alloc, on_read) < 0) {
            wc_channel_close(ch);
            return;
        }
        ch->reading = 1;
    } else if (!want && ch->reading) {
        uv_read_stop(&ch->h.stream);
        ch->reading = 0;
    }
}

/* ---- the backlog --------------------------------------------------------- */

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

/* ch->lock held.  Is the backlog full (stop parsing)?  A spooled body
 * counts whole: its bytes are on disk, and its fd is open. */
static int
backlog_full(const wc_channel_t *ch)
{
    return ch->npending > pending_limit(ch) || ch->pend_bytes > PENDING_BYTES
           || ch->nspooled >= SPOOLED_MAX;
}

/* ch->lock held.  Low enough again to read on. */
static int
backlog_low(const wc_channel_t *ch)
{
    return ch->npending <= pending_limit(ch) / 2
           && ch->pend_bytes <= PENDING_BYTES / 2 && ch->nspooled == 0;
}

/* ch->lock held.  Unlink the first queued request. */
static wc_request_t *
pop_pending(wc_channel_t *ch)
{
    wc_request_t *r = ch->pend_head;
    size_t n = request_size(r);
    ch->pend_head = r->next;
    if (ch->pend_head == NULL)
        ch->pend_tail = NULL;
    r->next = NULL;
    ch->npending--;
    if (r->body.fd >= 0)
        ch->nspooled--;
    ch->pend_bytes = ch->pend_bytes > n ? ch->pend_bytes - n : 0;
    return r;
}

/* ch->lock held.  Unlink every queued request; the caller frees them
 * (outside the lock). */
static wc_request_t *
take_pending(wc_channel_t *ch)
{
    wc_request_t *r = ch->pend_head;
    ch->pend_head = ch->pend_tail = NULL;
    ch->npending = ch->nspooled = 0;
    ch->pend_bytes = 0;
    return r;
}

static void
free_requests(wc_request_t *r)
{
    while (r) {
        wc_request_t *next = r->next;
        wc_request_free(r);
        r = next;
    }
}

/* ---- accept and read ---------------------------------------------------- */

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
    ch->state = WC_CONN_IDLE;
    atomic_init(&ch->refs, 1);
    ch->in_at = wc_now_ms();
    atomic_init(&ch->out_at, ch->in_at);
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

    if (nread == 0)
        return;
    if (ch->state == WC_CONN_LINGER) {
        /* Discarded.  EOF (or an error) ends the linger at once. */
        if (nread < 0 || (ch->lingered += (uint64_t)nread) > LINGER_BYTES)
            wc_channel_close(ch);
        return;
    }
    WC_ASSERT(reads_in(ch->state));
    if (nread > 0) {
        ch->in_at = wc_now_ms();
        feed(ch, buf->base, (size_t)nread);
        return;
    }
    if (nread != UV_EOF) {
        if (ch->srv->cfg.log_socket_errors && nread != UV_ECONNRESET)
            wc_server_log(ch->srv, 40, "Socket error: %s",
                          uv_strerror((int)nread));
        wc_channel_close(ch);
        return;
    }
    /* EOF: serve what was fully received, then close.  A request cut off
     * half-way is dropped. */
    pthread_mutex_lock(&ch->lock);
    ch->peer_eof = 1;
    pthread_mutex_unlock(&ch->lock);
    finish_input(ch);
}

/* ---- requests in, to the workers --------------------------------------- */

/* Hand a complete request to the channel's queue; the first one in an idle
 * channel becomes a task.  Returns 1 when the backlog is now full. */
static int
queue_request(wc_channel_t *ch, wc_request_t *r)
{
    int push = 0;
    pthread_mutex_lock(&ch->lock);
    if (ch->pend_tail)
        ch->pend_tail->next = r;
    else
        ch->pend_head = r;
    ch->pend_tail = r;
    ch->npending++;
    if (r->body.fd >= 0)
        ch->nspooled++;
    ch->pend_bytes += request_size(r);
    if (!ch->busy) {
        ch->busy = 1;
        atomic_fetch_add(&ch->refs, 1);
        atomic_fetch_add(&ch->srv->nbusy, 1);
        push = 1;
    }
    /* Asked for in the same hold: a worker that takes the request at once
     * must see it, or nobody would tell the loop to read again. */
    int full = backlog_full(ch);
    if (full)
        ch->wants |= WC_EV_ROOM;
    pthread_mutex_unlock(&ch->lock);
    if (push)
        wc_dispatch_push(ch->srv, ch);
    return full;
}

/* 100 Continue for the request being received, now if nothing of an
 * earlier response can still come, else once no worker holds the channel
 * (the worker's IDLE event). */
static void
send_continue(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    if (!ch->busy && ch->npending == 0) {
        if (wc_outq_append(&ch->out, continue_line,
                           sizeof(continue_line) - 1) < 0)
            ch->broken = 1;
        ch->continue_owed = 0;
    } else {
        ch->continue_owed = 1;
        ch->wants |= WC_EV_IDLE;
    }
    pthread_mutex_unlock(&ch->lock);
    wc_channel_flush(ch);
}

/* Parse bytes in IDLE, HEAD or BODY (or PAUSED's leftover), queueing every
 * request they complete.  An error becomes a pseudo-request that the
 * worker answers in order; nothing after it is read. */
static void
feed(wc_channel_t *ch, const char *p, size_t n)
{
    const wc_config_t *cfg = &ch->srv->cfg;

    while (n > 0) {
        wc_request_t *r = ch->req;
        size_t used = 0;

        if (r == NULL) {
            r = ch->req = wc_request_new(cfg->inbuf_overflow);
            if (r == NULL) {
                wc_server_log(ch->srv, 40, "Out of memory: connection "
                                           "dropped");
                wc_channel_close(ch);
                return;
            }
            set_state(ch, WC_CONN_HEAD);
            if (ch->state != WC_CONN_HEAD)
                return;     /* closed */
        }
        int rv = wc_request_feed(r, p, n, &used, cfg);
        p += used;
        n -= used;
        if (rv == WC_FEED_ERROR) {
            ch->req = NULL;
            r->keep_alive = 0;
            queue_request(ch, r);
            enter_done(ch);
            return;
        }
        if (rv == WC_FEED_MORE) {
            if (r->pstate != WC_PARSE_HEAD && ch->state == WC_CONN_HEAD)
                set_state(ch, WC_CONN_BODY);
            break;
        }
        /* Complete. */
        ch->req = NULL;
        int last = !r->keep_alive || r->close_after;
        /* A stopping server answers what it has received; the last of it
         * says Connection: close. */
        if (!last && atomic_load(&ch->srv->stopping) && n == 0) {
            r->keep_alive = 0;
            last = 1;
        }
        int full = queue_request(ch, r);
        if (last) {
            enter_done(ch);
            return;
        }
        if (full) {
            if (n > 0) {
                /* Keep the rest for when the backlog drains. */
                char *copy = malloc(n);
                if (copy == NULL) {
                    wc_server_log(ch->srv, 40, "Out of memory: connection "
                                               "dropped");
                    wc_channel_close(ch);
                    return;
                }
                memcpy(copy, p, n);
                WC_ASSERT(ch->leftover == NULL);
                ch->leftover = copy;
                ch->leftover_len = n;
            }
            set_state(ch, WC_CONN_PAUSED);
            return;
        }
        set_state(ch, WC_CONN_IDLE);
        if (ch->state != WC_CONN_IDLE)
            return;
    }
    /* A body is still to come: 100 Continue if the client waits for it. */
    if (ch->req && ch->req->pstate != WC_PARSE_HEAD
        && ch->req->expect_continue) {
        ch->req->expect_continue = 0;
        send_continue(ch);
    }
}

/* The backlog has drained: parse what was kept, then read again. */
static void
resume(wc_channel_t *ch)
{
    if (ch->state != WC_CONN_PAUSED)
        return;
    char *p = ch->leftover;
    size_t n = ch->leftover_len;
    ch->leftover = NULL;
    ch->leftover_len = 0;
    /* During a stop too: the requests behind the backlog are answered,
     * and the stop's grace (wc_channel_sweep) bounds the wait for more. */
    set_state(ch, WC_CONN_IDLE);
    if (p != NULL && ch->state == WC_CONN_IDLE)
        feed(ch, p, n);
    free(p);
}

/* No further request will be read (EOF, a close asked for by a response,
 * the end of a stop's grace): a request partly received is dropped, and
 * the connection closes once what it owes is written. */
static void
finish_input(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_CLOSED || ch->state == WC_CONN_DONE
        || ch->state == WC_CONN_LINGER)
        return;
    wc_request_free(ch->req);
    ch->req = NULL;
    free(ch->leftover);
    ch->leftover = NULL;
    ch->leftover_len = 0;
    enter_done(ch);
}

/* Into DONE: the connection closes (lingering) once what it owes is
 * written, perhaps at once.  The caller checks ch->state afterwards. */
static void
enter_done(wc_channel_t *ch)
{
    set_state(ch, WC_CONN_DONE);
    wc_channel_maybe_close(ch);
}

/* ---- ending ------------------------------------------------------------- */

/* DONE, with nothing owed any more: linger.  Otherwise ask to be told when
 * the worker lets the channel go; the output's own completion
 * (wc_channel_flush) calls back here too. */
void
wc_channel_maybe_close(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_CLOSED)
        return;
    pthread_mutex_lock(&ch->lock);
    int broken = ch->broken;
    int owed = ch->busy || ch->npending > 0 || ch->out.bytes > 0
               || ch->writing;
    if (ch->state == WC_CONN_DONE && owed)
        ch->wants |= WC_EV_IDLE;
    pthread_mutex_unlock(&ch->lock);
    if (broken)
        wc_channel_close(ch);
    else if (ch->state == WC_CONN_DONE && !owed)
        linger(ch);
}

/* Everything owed is written: shut the write side (the client reads our
 * FIN after the last byte) and read and discard until the client closes
 * too, for at most LINGER_MS and LINGER_BYTES.  Closing a socket with
 * unread input sends a reset, which would destroy response bytes still in
 * flight; this is nginx's and Apache's lingering close. */
static void
linger(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    int eof = ch->peer_eof;
    pthread_mutex_unlock(&ch->lock);
    if (shutdown(ch->fd, SHUT_WR) < 0 || eof) {
        wc_channel_close(ch);
        return;
    }
    ch->lingered = 0;
    set_state(ch, WC_CONN_LINGER);
    if (ch->state == WC_CONN_LINGER)
        ch->linger_end = wc_now_ms() + LINGER_MS;
}

/* The loop's side of a kick: a worker queued output, let the channel go,
 * ended the connection, or made room in the backlog. */
void
wc_channel_kicked(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    ch->kicked = 0;
    unsigned ev = ch->ev;
    ch->ev = 0;
    ch->wants &= ~ev;
    int idle = !ch->busy && ch->npending == 0;
    if ((ev & WC_EV_IDLE) && ch->continue_owed && idle && !ch->broken) {
        ch->continue_owed = 0;
        if (wc_outq_append(&ch->out, continue_line,
                           sizeof(continue_line) - 1) < 0)
            ch->broken = 1;
    }
    pthread_mutex_unlock(&ch->lock);
    if (ch->state != WC_CONN_CLOSED) {
        if (ev & WC_EV_CLOSE)
            finish_input(ch);
        if (ev & WC_EV_ROOM)
            resume(ch);
        wc_channel_flush(ch);   /* also maybe_close */
    }
    wc_channel_unref(ch);
}

/* Graceful: every request received completely is answered (the last one
 * with Connection: close), a request partly received is read to its end
 * (channel_timeout and shutdown_timeout bound that), and a connection
 * between requests gets STOP_GRACE_MS once it has nothing to do, to send
 * the request it may already have on the wire (answered with Connection:
 * close); then it closes, lingering.  Hard: close now. */
void
wc_channel_stop(wc_channel_t *ch, int hard)
{
    if (ch->state == WC_CONN_CLOSED)
        return;
    if (hard) {
        wc_channel_close(ch);
        return;
    }
    if (ch->state == WC_CONN_DONE || ch->state == WC_CONN_LINGER)
        return;
    ch->stop_at = wc_now_ms();
    if (ch->state != WC_CONN_IDLE)
        return;
    /* Nothing more read: the last request queued says close, and so does
     * the one in service if nothing is queued behind it and its head is
     * still to be written (wc_channel_keep_alive).  A response that has
     * already promised keep-alive gets the grace (wc_channel_sweep). */
    int queued = 0;
    pthread_mutex_lock(&ch->lock);
    if (ch->pend_tail) {
        ch->pend_tail->keep_alive = 0;
        queued = 1;
    } else if (ch->busy) {
        atomic_store(&ch->stop_close, 1);
    }
    pthread_mutex_unlock(&ch->lock);
    if (queued)
        enter_done(ch);
}

/* Worker, at the response head.  Read without the lock while no stop
 * asked for it (the common case: one relaxed load). */
int
wc_channel_keep_alive(wc_channel_t *ch, int asked)
{
    if (!asked || !atomic_load_explicit(&ch->stop_close,
                                        memory_order_relaxed))
        return asked;
    pthread_mutex_lock(&ch->lock);
    int ka = ch->npending > 0;
    pthread_mutex_unlock(&ch->lock);
    return ka;
}

void
wc_channel_close(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_CLOSED)
        return;
    set_state(ch, WC_CONN_CLOSED);
    ch->reading = 0;
    pthread_mutex_lock(&ch->lock);
    ch->broken = 1;
    wc_request_t *r = NULL;
    /* A queued task still holds the channel: it finds `broken` and drops
     * its requests; here we drop the ones nobody holds. */
    if (!ch->busy)
        r = take_pending(ch);
    wc_channel_wake_waiters(ch);
    pthread_mutex_unlock(&ch->lock);
    free_requests(r);
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
    WC_ASSERT(ch->state == WC_CONN_CLOSED);
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
    WC_ASSERT(ch->state == WC_CONN_CLOSED);
    free_requests(ch->pend_head);
    wc_outq_free(&ch->out);
    wc_channel_give_back(ch);
    free(ch->leftover);
    pthread_mutex_destroy(&ch->lock);
    free(ch);
}

/* Once a second.  channel_timeout bounds four things, each on its own
 * clock: how long a connection may stay between requests with nothing to
 * do (no request queued or served, no output waiting); how long a request
 * head may take from its first byte (empty lines included: a head trickled
 * in, or line ends sent to hold the connection); how long a body may go
 * without a byte; and how long output may wait without the client taking
 * a byte (a reader that stopped pins no worker: the channel closes and a
 * parked writer sees the client gone).  Only bytes the client takes move
 * the last clock: a client that sends while it does not read is still
 * stalled.  A request being served that sends nothing is never timed out.
 * During a stop, a connection between requests with nothing to do closes
 * after STOP_GRACE_MS; a linger ends at ch->linger_end. */
void
wc_channel_sweep(wc_channel_t *ch, uint64_t now)
{
    uint64_t limit = ch->srv->cfg.channel_timeout_ms;
    if (ch->state == WC_CONN_CLOSED)
        return;
    if (ch->state == WC_CONN_LINGER) {
        if (now >= ch->linger_end)
            wc_channel_close(ch);
        return;
    }
    pthread_mutex_lock(&ch->lock);
    int idle = !ch->busy && ch->npending == 0;
    int waiting = ch->out.bytes > 0 || ch->writing;
    uint64_t out_at = atomic_load_explicit(&ch->out_at,
                                           memory_order_relaxed);
    pthread_mutex_unlock(&ch->lock);

    if (waiting && now > out_at && now - out_at > limit) {
        wc_channel_close(ch);   /* stalled: the client reads nothing */
        return;
    }
    if (!idle || waiting)
        return;
    uint64_t since;
    switch (ch->state) {
    case WC_CONN_IDLE:
        since = ch->in_at > out_at ? ch->in_at : out_at;
        if (ch->stop_at) {
            if (ch->stop_at > since)
                since = ch->stop_at;
            if (now > since && now - since >= STOP_GRACE_MS) {
                finish_input(ch);   /* the stop's grace is over */
                return;
            }
        }
        break;
    case WC_CONN_HEAD:
        since = ch->head_at;
        break;
    case WC_CONN_BODY:
        since = ch->in_at;
        break;
    default:
        return;
    }
    if (now > since && now - since > limit)
        wc_channel_close(ch);
}

/* ---- the workers' side -------------------------------------------------- */

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

/* ch->lock held.  Post an event; the wanted ones kick the loop. */
static void
post(wc_channel_t *ch, unsigned ev)
{
    ch->ev |= ev;
    if ((ev & WC_EV_CLOSE) || (ev & ch->wants) || ch->broken)
        wc_channel_kick(ch);
}

/* ch->lock held.  The worker lets the channel go: what it held back goes
 * out, and the loop hears of it if it waits for that. */
static void
release_locked(wc_channel_t *ch, unsigned ev)
{
    ch->busy = 0;
    atomic_fetch_sub(&ch->srv->nbusy, 1);
    if (ch->out.head && !ch->writing
        && wc_channel_send_locked(ch, NULL, NULL, 0, 0) < 0)
        ch->broken = 1;
    post(ch, ev | WC_EV_IDLE);
}

wc_request_t *
wc_channel_take(wc_channel_t *ch, int *more)
{
    wc_request_t *req = NULL, *drop = NULL;
    pthread_mutex_lock(&ch->lock);
    WC_ASSERT(ch->busy);
    if (ch->pend_head == NULL || ch->broken) {
        if (ch->broken)
            drop = take_pending(ch);
        release_locked(ch, 0);
    } else {
        req = pop_pending(ch);
        *more = ch->pend_head != NULL;
        if ((ch->wants & WC_EV_ROOM) && backlog_low(ch))
            post(ch, WC_EV_ROOM);
    }
    pthread_mutex_unlock(&ch->lock);
    free_requests(drop);
    return req;
}

void
wc_channel_end(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    WC_ASSERT(ch->busy);
    wc_request_t *drop = take_pending(ch);
    release_locked(ch, WC_EV_CLOSE);
    pthread_mutex_unlock(&ch->lock);
    free_requests(drop);
}

void
wc_channel_yield(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    if (ch->out.head && !ch->writing
        && wc_channel_send_locked(ch, NULL, NULL, 0, 0) < 0)
        ch->broken = 1;
    pthread_mutex_unlock(&ch->lock);
    wc_dispatch_push(ch->srv, ch);
}
