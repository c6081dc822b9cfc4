/* channel.c: one client connection and its lifecycle.  Opens it on an
 * accepted socket, reads and parses its requests (parser.c's
 * wc_request_feed), queues complete ones for the worker pool in order
 * (bounded: the pipelining backlog), hands them to workers one at a time,
 * and ends the connection: lingering close after a response, timeouts,
 * graceful and hard stops.  The output side is channel_out.c.
 *
 * The lifecycle is one field, ch->state (loop.h lists the states and their
 * arrows), changed only by set_state(), which asserts the step and does
 * what the new state needs of the socket (polled for reading or not).
 * Keep-alive has one owner: the request's keep_alive bit, set by the
 * parser, only ever cleared afterwards (here during a stop, by response.c
 * for the app's framing), and consumed in one place: the worker's
 * wc_channel_end when the response said close, which the loop turns into
 * DONE and then a lingering close.
 *
 * A connection is two allocations: the small wc_channel_t, all an idle
 * keep-alive connection holds, and its busy part (wc_busy_t), which the
 * loop allocates at the first byte of a request and frees once the
 * connection is quiescent again (shed()).
 *
 * Workers never change the lifecycle: they post events (WC_EV_*) under
 * b->lock and kick the loop, which drains them in wc_channel_kicked.
 *
 * GIL map: nothing here touches Python.  Everything runs on the loop
 * thread, except the worker side (wc_channel_take, wc_channel_end,
 * wc_channel_yield, wc_channel_keep_alive, wc_channel_kick), which runs
 * on workers, GIL held or not, and touches only the fields under b->lock.
 * Only the loop closes.
 *
 * TLS (tls.c): a connection on a TLS server starts in HANDSHAKE, reads
 * with wc_tls_read instead of recv (channel_out.c writes with
 * wc_tls_writev), and sends close_notify before a lingering close.
 *
 * HTTP/2 (h2.c): a connection whose first bytes are the HTTP/2 preface,
 * or whose TLS handshake chose h2, becomes WC_KIND_H2 and stays IDLE while
 * h2.c reads and writes it; when it has nothing more to send it goes to
 * DONE (wc_channel_done) and closes like an HTTP/1 one.  Its streams are
 * channels too (WC_KIND_STREAM), made and ended here for h2.c.
 */
#include "loop.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Stop parsing (and reading) when this many complete requests, or this
 * many bytes of them, or one spooled body, wait behind the running one
 * (pipelining / lookahead backlog); what was read but not parsed waits in
 * b->leftover. */
#define PENDING_MAX 32
#define PENDING_BYTES (256 * 1024)
#define SPOOLED_MAX 1
/* A stopping server gives each connection between requests this long,
 * once it has nothing to do, to send the request it may have on the
 * wire. */
#define STOP_GRACE_MS 1000
/* Lingering close: how long input is read and discarded after the write
 * side is shut, so that the close never resets a response the client is
 * still reading.  Bounded by time only, as nginx's lingering_time: a byte
 * bound would reset the answer (a 413, say) to a client that sends a large
 * body before it reads. */
#define LINGER_MS 2000
/* Reads per readiness event, while each fills the read buffer. */
#define READS_PER_EVENT 4
/* A connection idle this long gives its busy part back (see shed). */
#define SHED_IDLE_MS 1000

static const char continue_line[] = WC_CONTINUE_LINE;

static void on_input(wc_channel_t *ch, ssize_t nread);
static void feed(wc_channel_t *ch, const char *p, size_t n);
static void finish_input(wc_channel_t *ch);
static void enter_done(wc_channel_t *ch);
static void linger(wc_channel_t *ch);
static void stop_idle(wc_channel_t *ch);
static void handshake(wc_channel_t *ch);
static void start_h2(wc_channel_t *ch, const char *p, size_t n);
static int queue_request(wc_channel_t *ch, wc_request_t *r);

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

/* ---- the socket's readiness --------------------------------------------- */

/* Make epoll's set match what the channel wants (server.c: on_epoll): a
 * change costs one epoll_ctl.  With no event wanted the socket leaves
 * the set: epoll reports a hang-up whatever it is asked, and a
 * connection still owing a response to a client that hung up is for the
 * output side to end (its write fails), not for a stream of reports.
 * While a TLS read waits for the socket to take bytes (read_out), EPOLLOUT
 * is polled in EPOLLIN's place.  Returns 0 if that failed and closed the
 * channel. */
static int
poll_apply(wc_channel_t *ch)
{
    unsigned want = ch->events;
    if (ch->read_out)
        want = (want & ~(unsigned)EPOLLIN) | EPOLLOUT;
    if (want == ch->polled)
        return 1;
    struct epoll_event e = {.events = want, .data.ptr = ch};
    int op = ch->polled == 0 ? EPOLL_CTL_ADD
             : want == 0     ? EPOLL_CTL_DEL
                             : EPOLL_CTL_MOD;
    ch->polled = (uint8_t)want;
    if (epoll_ctl(ch->srv->epfd, op, ch->fd, &e) < 0) {
        wc_channel_close(ch);
        return 0;
    }
    return 1;
}

/* Want `events` (EPOLLIN, EPOLLOUT) for the socket. */
static void
set_events(wc_channel_t *ch, unsigned events)
{
    if (ch->state == WC_CONN_CLOSED || events == ch->events)
        return;
    unsigned was = ch->events;
    ch->events = (uint8_t)events;
    if (!poll_apply(ch))
        return;
    /* Reading resumes: records OpenSSL read ahead before it stopped make
     * no epoll event. */
    if (ch->tls && (events & ~was & EPOLLIN))
        wc_channel_check_ready(ch);
}

/* A TLS read must write first and the socket is full (SSL_read's
 * WANT_WRITE, tls.c): the client is not reading.  Polled for EPOLLIN, a
 * client that goes on sending would wake the loop for ever, each read
 * failing the same way, so the socket is polled for EPOLLOUT instead
 * until it takes bytes; channel_timeout still ends a client that never
 * reads. */
void
wc_channel_read_waits_out(wc_channel_t *ch)
{
    WC_ASSERT(ch->tls != NULL);
    if (ch->state == WC_CONN_CLOSED || ch->read_out)
        return;
    ch->read_out = 1;
    (void)poll_apply(ch);
}

int
wc_channel_read_resumes(wc_channel_t *ch, unsigned events)
{
    if (!ch->read_out || !(events & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
        return 0;
    ch->read_out = 0;
    if (!poll_apply(ch))
        return 0;
    return (ch->events & EPOLLIN) != 0;
}

/* ---- TLS records read ahead ------------------------------------------- */

/* OpenSSL reads ahead (tls.c): a read round that stops for room, or for
 * the backlog, can leave whole records inside it with the socket empty,
 * and epoll would never report them.  Such a channel goes on the server's
 * ready list (a reference each) and is read at the loop's next turn, as
 * if epoll had said EPOLLIN; when reading resumes later (set_events), the
 * same check puts it there. */

void
wc_channel_check_ready(wc_channel_t *ch)
{
    wc_server_t *srv = ch->srv;
    if (ch->ready || ch->state == WC_CONN_CLOSED || !(ch->events & EPOLLIN)
        || ch->read_out || !wc_tls_has_pending(ch->tls))
        return;
    if (srv->nready == srv->ready_cap) {
        uint32_t cap = srv->ready_cap ? srv->ready_cap * 2 : 16;
        wc_channel_t **a = realloc(srv->ready, cap * sizeof(*a));
        if (a == NULL) {
            /* Its next request would wait for a byte that may never come:
             * end it now rather than leave it hanging. */
            wc_server_log(srv, 40, "Out of memory: connection dropped");
            wc_channel_close(ch);
            return;
        }
        srv->ready = a;
        srv->ready_cap = cap;
    }
    atomic_fetch_add(&ch->refs, 1);
    ch->ready = 1;
    srv->ready[srv->nready++] = ch;
    wc_server_ready_soon(srv);
}

uint32_t
wc_channel_run_ready(wc_server_t *srv)
{
    /* The channels on the list now; a read may put one back (it stopped
     * for room again), to be read at the next turn, after epoll's. */
    uint32_t n = srv->nready;
    wc_channel_t *batch[64];
    if (n > 64)
        n = 64;
    memcpy(batch, srv->ready, n * sizeof(*batch));
    memmove(srv->ready, srv->ready + n, (srv->nready - n) * sizeof(*batch));
    srv->nready -= n;
    for (uint32_t i = 0; i < n; i++) {
        wc_channel_t *ch = batch[i];
        ch->ready = 0;
        if (ch->state != WC_CONN_CLOSED && (ch->events & EPOLLIN))
            wc_channel_io(ch, EPOLLIN);
        wc_channel_unref(ch);
    }
    return srv->nready;
}

void
wc_channel_drop_ready(wc_server_t *srv)
{
    for (uint32_t i = 0; i < srv->nready; i++) {
        srv->ready[i]->ready = 0;
        wc_channel_unref(srv->ready[i]);
    }
    free(srv->ready);
    srv->ready = NULL;
    srv->nready = srv->ready_cap = 0;
}

/* Loop: the output side wants POLLOUT (the socket refused bytes), or no
 * longer. */
void
wc_channel_want_write(wc_channel_t *ch, int on)
{
    unsigned ev = ch->events & ~(unsigned)EPOLLOUT;
    set_events(ch, on ? ev | EPOLLOUT : ev);
}

/* ---- the lifecycle ------------------------------------------------------ */

/* The arrows of loop.h's diagram, one bit per target state. */
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
    [WC_CONN_HANDSHAKE] = S(IDLE) | S(LINGER) | S(CLOSED),
};
#undef S

/* Does the loop read the socket in this state?  In DONE and LINGER what
 * arrives is read and discarded (nothing more is served), so that the
 * close does not find it unread and reset the connection; reading on
 * through DONE also spares two epoll_ctl a closing connection. */
static int
reads_in(wc_conn_state s)
{
    return s == WC_CONN_IDLE || s == WC_CONN_HEAD || s == WC_CONN_BODY
           || s == WC_CONN_DONE || s == WC_CONN_LINGER
           || s == WC_CONN_HANDSHAKE;
}

/* The one place the state changes.  Polls for reading or not, to match
 * the new state; a state's clock starts here.  Every state but IDLE and
 * CLOSED has a busy part. */
static void
set_state(wc_channel_t *ch, wc_conn_state to)
{
    wc_conn_state from = (wc_conn_state)ch->state;
    WC_ASSERT(to < WC_CONN_NSTATES);
    WC_ASSERT(allowed[from] & (1u << to));
    WC_ASSERT(to == WC_CONN_IDLE || to == WC_CONN_CLOSED || ch->b != NULL);
    ch->state = (uint8_t)to;
    if (to == WC_CONN_CLOSED)
        return;
    uint64_t now = wc_now_ms();
    if (to == WC_CONN_HEAD)
        ch->b->head_at = now;
    ch->in_at = now;
    unsigned ev = ch->events & ~(unsigned)EPOLLIN;
    set_events(ch, reads_in(to) ? ev | EPOLLIN : ev);
}

/* ---- the busy part ------------------------------------------------------ */

static wc_busy_t *
busy_new(wc_channel_t *ch)
{
    wc_busy_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    pthread_mutex_init(&b->lock, NULL);
    wc_outq_init(&b->out);
    atomic_init(&b->out_at, wc_now_ms());
    atomic_init(&b->stop_close, 0);
    ch->b = b;
    wc_server_t *srv = ch->srv;
    srv->nbusy_parts++;
    atomic_store_explicit(&srv->shed, srv->nbusy_parts > WC_KEEP_BUSY,
                          memory_order_relaxed);
    return b;
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

/* The busy part's memory: no thread refers to it any more.  Touches
 * nothing of the server's, which may be gone by now (an app can keep a
 * client_disconnected callable, and so the channel, past its server):
 * the output queue was emptied when the connection closed
 * (release_output). */
static void
busy_free(wc_busy_t *b)
{
    WC_ASSERT(b->out.head == NULL && b->out.dead == NULL);
    free_requests(b->pend_head);
    wc_request_free(b->req);
    free(b->leftover);
    free(b->wblk);
    wc_outq_free(&b->out);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* Loop: the busy part no longer counts towards WC_KEEP_BUSY (shed, or the
 * connection closed). */
static void
uncount_busy(wc_channel_t *ch)
{
    wc_server_t *srv = ch->srv;
    srv->nbusy_parts--;
    atomic_store_explicit(&srv->shed, srv->nbusy_parts > WC_KEEP_BUSY,
                          memory_order_relaxed);
}

/* b->lock held, the connection closed and no worker holding it (the loop
 * at the close, or the worker that lets it go): what was still queued
 * for it will never be sent.  The app's objects among it go to the
 * server's release list now, while the server is sure to exist. */
static void
release_output(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    wc_outq_free(&b->out);
    wc_channel_give_back(ch);
}

/* Loop, in IDLE: give the busy part back if the connection is quiescent
 * (nothing arriving, queued, served, held back or waiting to be written;
 * no worker refers to it).  Its output clock becomes the idle clock. */
static void
shed(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    if (b == NULL || ch->state != WC_CONN_IDLE || b->req || b->leftover
        || b->wblk || b->continue_owed || b->h2)
        return;
    pthread_mutex_lock(&b->lock);
    int quiet = !b->busy && b->npending == 0 && b->out.head == NULL
                && !b->writing && b->waiters == NULL && b->writers == 0
                && !b->kicked && !b->deferred && b->ev == 0 && !b->broken
                && b->out.dead == NULL;
    uint64_t out_at = atomic_load_explicit(&b->out_at, memory_order_relaxed);
    pthread_mutex_unlock(&b->lock);
    if (!quiet)
        return;
    if (out_at > ch->in_at)
        ch->in_at = out_at;
    ch->b = NULL;
    uncount_busy(ch);
    busy_free(b);
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

/* b->lock held.  Is the backlog full (stop parsing)?  A spooled body
 * counts whole: its bytes are on disk, and its fd is open. */
static int
backlog_full(const wc_channel_t *ch)
{
    const wc_busy_t *b = ch->b;
    return b->npending > pending_limit(ch) || b->pend_bytes > PENDING_BYTES
           || b->nspooled >= SPOOLED_MAX;
}

/* b->lock held.  Low enough again to read on. */
static int
backlog_low(const wc_channel_t *ch)
{
    const wc_busy_t *b = ch->b;
    return b->npending <= pending_limit(ch) / 2
           && b->pend_bytes <= PENDING_BYTES / 2 && b->nspooled == 0;
}

/* b->lock held.  Unlink the first queued request. */
static wc_request_t *
pop_pending(wc_busy_t *b)
{
    wc_request_t *r = b->pend_head;
    size_t n = request_size(r);
    b->pend_head = r->next;
    if (b->pend_head == NULL)
        b->pend_tail = NULL;
    r->next = NULL;
    b->npending--;
    if (r->body.fd >= 0)
        b->nspooled--;
    b->pend_bytes = b->pend_bytes > n ? b->pend_bytes - n : 0;
    return r;
}

/* b->lock held.  Unlink every queued request; the caller frees them
 * (outside the lock). */
static wc_request_t *
take_pending(wc_busy_t *b)
{
    wc_request_t *r = b->pend_head;
    b->pend_head = b->pend_tail = NULL;
    b->npending = b->nspooled = 0;
    b->pend_bytes = 0;
    return r;
}

/* ---- open and read ------------------------------------------------------ */

int
wc_channel_open(wc_server_t *srv, int fd, int index,
                const struct sockaddr *peer)
{
    wc_channel_t *ch = calloc(1, sizeof(*ch));
    if (ch == NULL) {
        close(fd);
        return UV_ENOMEM;
    }
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = ch};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        int rv = -errno;
        close(fd);
        free(ch);
        return rv;
    }
    ch->events = ch->polled = EPOLLIN;  /* in the set (poll_apply adds it
                                           otherwise) */
    ch->srv = srv;
    ch->fd = fd;
    ch->listener = (uint16_t)index;
    ch->state = WC_CONN_IDLE;
    ch->in_at = wc_now_ms();
    ch->kind = srv->cfg.http2 ? WC_KIND_NEW : WC_KIND_H1;
    atomic_init(&ch->refs, 1);
    if (srv->tls && !srv->listeners[index].plain) {
        /* The handshake's clock is in_at: it does not move until the
         * handshake is done. */
        ch->state = WC_CONN_HANDSHAKE;
        ch->secure = 1;
        ch->tls = wc_tls_conn_new(srv->tls, fd);
        if (ch->tls == NULL) {
            close(fd);
            free(ch);
            return UV_ENOMEM;
        }
    }
    if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;
        ch->peer_family = 6;
        memcpy(ch->peer_addr, &a->sin6_addr, 16);
        ch->peer_port = ntohs(a->sin6_port);
    } else if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)peer;
        ch->peer_family = 4;
        memcpy(ch->peer_addr, &a->sin_addr, 4);
        ch->peer_port = ntohs(a->sin_port);
    }
    /* From here the handle is live: errors go through close. */
    ch->next = srv->channels;
    if (srv->channels)
        srv->channels->prev = ch;
    srv->channels = ch;
    srv->nchannels++;
    wc_m_own_add(srv->m, WC_M_ACCEPTED, 1);
    wc_m_set(srv->m, WC_M_CONNECTIONS, srv->nchannels);
    /* The request is usually there already (TCP_DEFER_ACCEPT on our
     * listeners): read it now rather than after another epoll round. */
    wc_channel_io(ch, EPOLLIN);
    return 0;
}

static void
read_some(wc_channel_t *ch)
{
    wc_server_t *srv = ch->srv;
    for (int i = 0; i < READS_PER_EVENT; i++) {
        ssize_t n;
        if (ch->tls) {
            /* A worker may be writing a response through the same SSL
             * object (channel_out.c): while the busy part exists, the
             * SSL object is used under its lock only. */
            wc_busy_t *b = ch->b;
            if (b)
                pthread_mutex_lock(&b->lock);
            n = wc_tls_read(ch->tls, srv->readbuf, sizeof(srv->readbuf),
                            ch->state == WC_CONN_IDLE);
            if (b)
                pthread_mutex_unlock(&b->lock);
            if (n == -EAGAIN)
                return;
            if (n == WC_TLS_NEEDS_OUT) {
                wc_channel_read_waits_out(ch);
                return;
            }
        } else {
            do {
                n = recv(ch->fd, srv->readbuf, sizeof(srv->readbuf), 0);
            } while (n < 0 && errno == EINTR);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n < 0)
                n = -errno;
        }
        if (n > 0)
            wc_m_own_add(srv->m, WC_M_BYTES_IN, (uint64_t)n);
        on_input(ch, n);
        /* Also when the first read made it HTTP/2: h2.c reads the rest
         * (the socket stays readable). */
        if (n < (ssize_t)sizeof(srv->readbuf) || ch->state == WC_CONN_CLOSED
            || !(ch->events & EPOLLIN) || ch->kind == WC_KIND_H2)
            break;
    }
    if (ch->tls)
        wc_channel_check_ready(ch);
}

/* Loop: the socket is ready (epoll's events).  A hang-up or an error is
 * met by the read or the write it makes fail; one that neither meets (it
 * would be reported for ever) ends the connection. */
void
wc_channel_io(wc_channel_t *ch, unsigned events)
{
    if (ch->state == WC_CONN_CLOSED)
        return;
    if (ch->state == WC_CONN_HANDSHAKE) {
        handshake(ch);  /* a hang-up or an error makes it fail */
        return;
    }
    if (ch->kind == WC_KIND_H2 && ch->state == WC_CONN_IDLE) {
        wc_h2_io(ch, events);
        return;
    }
    int trouble = (events & (EPOLLHUP | EPOLLERR)) != 0;
    int resumed = wc_channel_read_resumes(ch, events);
    if (ch->state == WC_CONN_CLOSED)
        return;
    if ((ch->events & EPOLLOUT) && ((events & EPOLLOUT) || trouble))
        wc_channel_flush(ch);
    if (ch->state == WC_CONN_CLOSED)
        return;
    if ((ch->events & EPOLLIN) && ((events & EPOLLIN) || trouble || resumed))
        read_some(ch);
    else if (trouble && !(ch->events & EPOLLOUT))
        wc_channel_close(ch);
}

/* ---- TLS: the handshake ---------------------------------------------------- */

/* What a plain HTTP request on a TLS port gets, as nginx answers it. */
static const char plain_reply[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 23\r\n"
    "Connection: close\r\n"
    "\r\n"
    "This port speaks HTTPS\n";

/* HANDSHAKE, and the first byte was a letter: the client speaks plain
 * HTTP.  Answer 400 in the clear (a few bytes: an empty socket takes
 * them), shut the write side and linger, reading in the clear, so that
 * the unread request does not reset the answer. */
static void
refuse_plain(wc_channel_t *ch)
{
    wc_tls_conn_free(ch->tls);
    ch->tls = NULL;
    ssize_t n;
    do {
        n = send(ch->fd, plain_reply, sizeof(plain_reply) - 1,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)(sizeof(plain_reply) - 1)
        || (ch->b == NULL && busy_new(ch) == NULL)
        || shutdown(ch->fd, SHUT_WR) < 0) {
        wc_channel_close(ch);
        return;
    }
    ch->b->sending = 1;
    ch->b->linger_end = wc_now_ms() + LINGER_MS;
    set_events(ch, EPOLLIN);
    set_state(ch, WC_CONN_LINGER);
}

/* HANDSHAKE: the socket is ready; take the handshake a step further.
 * Done: the connection is IDLE, and the first request (often sent right
 * behind the client's Finished) is read at once.  A failure (a bad or
 * truncated ClientHello, no common version or cipher, a client
 * certificate refused, the client gone) closes: nothing was owed. */
static void
handshake(wc_channel_t *ch)
{
    int rv = wc_tls_handshake(ch->tls);
    if (rv == WC_TLS_WANT_READ) {
        set_events(ch, EPOLLIN);
    } else if (rv == WC_TLS_WANT_WRITE) {
        set_events(ch, EPOLLOUT);
    } else if (rv == WC_TLS_DONE) {
        set_events(ch, EPOLLIN);
        set_state(ch, WC_CONN_IDLE);
        if (ch->state == WC_CONN_IDLE && ch->kind == WC_KIND_NEW
            && wc_tls_alpn_h2(ch->tls))
            start_h2(ch, NULL, 0);  /* reads what follows itself */
        else if (ch->state == WC_CONN_IDLE)
            read_some(ch);
    } else if (rv == WC_TLS_PLAIN) {
        refuse_plain(ch);
    } else {
        wc_channel_close(ch);
    }
}

/* `nread` bytes arrived in srv->readbuf; 0 is the client's end of stream,
 * a negative value an error. */
static void
on_input(wc_channel_t *ch, ssize_t nread)
{
    WC_ASSERT(reads_in((wc_conn_state)ch->state));
    if (nread > 0) {
        if (ch->state == WC_CONN_DONE || ch->state == WC_CONN_LINGER) {
            ch->b->sending = 1;     /* discarded: the close must linger */
            return;
        }
        ch->in_at = wc_now_ms();
        if (ch->kind == WC_KIND_NEW) {
            /* The first bytes: the HTTP/2 preface, or HTTP/1.  Four are
             * enough to tell ("PRI " starts no HTTP/1.1 request we
             * serve); nghttp2 checks the other twenty. */
            const char *p = ch->srv->readbuf;
            size_t n = (size_t)nread, k = n < 24 ? n : 24;
            if (n >= 4 && memcmp(p, WC_H2_PREFACE, k) == 0) {
                start_h2(ch, p, n);
                return;
            }
            ch->kind = WC_KIND_H1;
        }
        feed(ch, ch->srv->readbuf, (size_t)nread);
        return;
    }
    if (nread < 0) {
        if (ch->srv->cfg.log_socket_errors && nread != -ECONNRESET
            && ch->state != WC_CONN_LINGER)
            wc_server_log(ch->srv, 40, "Socket error: %s",
                          uv_strerror((int)nread));
        wc_channel_close(ch);
        return;
    }
    /* EOF: serve what was fully received, then close.  A request cut off
     * half-way is dropped.  Nothing owed at all: close now. */
    atomic_store_explicit(&ch->gone, WC_GONE_EOF, memory_order_relaxed);
    if (ch->b == NULL || ch->state == WC_CONN_LINGER) {
        wc_channel_close(ch);
        return;
    }
    pthread_mutex_lock(&ch->b->lock);
    ch->b->peer_eof = 1;
    pthread_mutex_unlock(&ch->b->lock);
    finish_input(ch);
    /* Still owing output: the end of stream would be reported for ever. */
    if (ch->state == WC_CONN_DONE)
        set_events(ch, ch->events & ~(unsigned)EPOLLIN);
}

/* The connection speaks HTTP/2 from here (IDLE, no request read): h2.c
 * takes it over, with a busy part for its output. */
static void
start_h2(wc_channel_t *ch, const char *p, size_t n)
{
    WC_ASSERT(ch->state == WC_CONN_IDLE);
    if (ch->b == NULL && busy_new(ch) == NULL) {
        wc_server_log(ch->srv, 40, "Out of memory: connection dropped");
        wc_channel_close(ch);
        return;
    }
    wc_h2_start(ch, p, n);
}

void
wc_channel_done(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_IDLE)
        enter_done(ch);
}

/* ---- HTTP/2 streams as channels ----------------------------------------- */

int
wc_channel_stream_init(wc_channel_t *ch, wc_channel_t *conn)
{
    ch->srv = conn->srv;
    ch->fd = -1;
    ch->kind = WC_KIND_STREAM;
    ch->secure = conn->secure;
    ch->state = WC_CONN_IDLE;
    ch->listener = conn->listener;
    ch->peer_family = conn->peer_family;
    ch->peer_port = conn->peer_port;
    memcpy(ch->peer_addr, conn->peer_addr, sizeof(ch->peer_addr));
    ch->in_at = wc_now_ms();
    atomic_init(&ch->refs, 1);
    if (busy_new(ch) == NULL)
        return UV_ENOMEM;
    /* h2.c learns when the worker lets the stream go. */
    ch->b->wants = WC_EV_IDLE;
    return 0;
}

void
wc_channel_stream_dispatch(wc_channel_t *ch, wc_request_t *r)
{
    (void)queue_request(ch, r);     /* one request: never FULL */
}

void
wc_channel_stream_close(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_CLOSED)
        return;
    set_state(ch, WC_CONN_CLOSED);
    atomic_store_explicit(&ch->gone, WC_GONE_CLOSED, memory_order_relaxed);
    wc_busy_t *b = ch->b;
    wc_request_t *r = NULL;
    pthread_mutex_lock(&b->lock);
    b->broken = 1;
    if (!b->busy) {
        r = take_pending(b);
        release_output(ch);
    }
    wc_channel_wake_waiters(ch);
    pthread_mutex_unlock(&b->lock);
    free_requests(r);
    uncount_busy(ch);
}

/* ---- requests in, to the workers --------------------------------------- */

/* Hand a complete request to the channel's queue; the first one in an idle
 * channel becomes a task.  Returns QUEUED, FULL (the backlog is now full)
 * or ENDED: a response has already ended the connection (its close is on
 * its way to the loop), so the request is not served (RFC 9112 9.6) and
 * is freed. */
enum { QUEUED, FULL, ENDED };

static int
queue_request(wc_channel_t *ch, wc_request_t *r)
{
    wc_busy_t *b = ch->b;
    int push = 0;
    r->done_ns = uv_hrtime();   /* the request-duration clock starts */
    pthread_mutex_lock(&b->lock);
    if (b->broken || (b->ev & WC_EV_CLOSE)) {
        pthread_mutex_unlock(&b->lock);
        wc_request_free(r);
        return ENDED;
    }
    /* A stop's close for the response in service held while nothing was
     * queued behind it; this request now follows, with its own bit. */
    atomic_store_explicit(&b->stop_close, 0, memory_order_relaxed);
    if (b->pend_tail)
        b->pend_tail->next = r;
    else
        b->pend_head = r;
    b->pend_tail = r;
    b->npending++;
    if (r->body.fd >= 0) {
        b->nspooled++;
        wc_m_own_add(ch->srv->m, WC_M_SPOOLED, 1);
    }
    b->pend_bytes += request_size(r);
    if (!b->busy) {
        b->busy = 1;
        atomic_fetch_add(&ch->refs, 1);
        atomic_fetch_add(&ch->srv->nbusy, 1);
        push = 1;
    }
    /* Asked for in the same hold: a worker that takes the request at once
     * must see it, or nobody would tell the loop to read again. */
    int full = backlog_full(ch);
    if (full)
        b->wants |= WC_EV_ROOM;
    pthread_mutex_unlock(&b->lock);
    if (push)
        wc_dispatch_push(ch->srv, ch);
    return full ? FULL : QUEUED;
}

/* 100 Continue for the request being received, now if nothing of an
 * earlier response can still come, else once no worker holds the channel
 * (the worker's IDLE event). */
static void
send_continue(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    pthread_mutex_lock(&b->lock);
    if (!b->busy && b->npending == 0) {
        if (wc_outq_append(&b->out, continue_line,
                           sizeof(continue_line) - 1) < 0)
            b->broken = 1;
        b->continue_owed = 0;
    } else {
        b->continue_owed = 1;
        b->wants |= WC_EV_IDLE;
    }
    pthread_mutex_unlock(&b->lock);
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
        wc_busy_t *b = ch->b;
        if (b == NULL && (b = busy_new(ch)) == NULL)
            goto nomem;
        wc_request_t *r = b->req;
        size_t used = 0;

        if (r == NULL) {
            r = b->req = wc_request_new(cfg->inbuf_overflow);
            if (r == NULL)
                goto nomem;
            if (ch->tls)
                r->tls = wc_tls_info(ch->tls);
            set_state(ch, WC_CONN_HEAD);
            if (ch->state != WC_CONN_HEAD)
                return;     /* closed */
        }
        int rv = wc_request_feed(r, p, n, &used, cfg);
        p += used;
        n -= used;
        if (rv != WC_FEED_MORE)
            b->continue_owed = 0;   /* its body came without it */
        if (rv == WC_FEED_ERROR) {
            b->sending = 1;     /* the rest of it may still be coming */
            b->req = NULL;
            r->keep_alive = 0;
            if (queue_request(ch, r) == ENDED)
                finish_input(ch);
            else
                enter_done(ch);
            return;
        }
        if (rv == WC_FEED_MORE) {
            if (r->pstate != WC_PARSE_HEAD && ch->state == WC_CONN_HEAD)
                set_state(ch, WC_CONN_BODY);
            break;
        }
        /* Complete. */
        b->req = NULL;
        int last = !r->keep_alive || r->close_after;
        /* A stopping server answers what it has received; the last of it
         * says Connection: close. */
        if (!last && atomic_load(&ch->srv->stopping) && n == 0) {
            r->keep_alive = 0;
            last = 1;
        }
        int q = queue_request(ch, r);
        if (q == ENDED) {
            finish_input(ch);
            return;
        }
        if (last) {
            enter_done(ch);
            return;
        }
        if (q == FULL) {
            if (n > 0) {
                /* Keep the rest for when the backlog drains. */
                char *copy = malloc(n);
                if (copy == NULL)
                    goto nomem;
                memcpy(copy, p, n);
                WC_ASSERT(b->leftover == NULL);
                b->leftover = copy;
                b->leftover_len = n;
            }
            set_state(ch, WC_CONN_PAUSED);
            return;
        }
        set_state(ch, WC_CONN_IDLE);
        if (ch->state != WC_CONN_IDLE)
            return;
    }
    /* A body is still to come: 100 Continue if the client waits for it. */
    wc_request_t *r = ch->b ? ch->b->req : NULL;
    if (r && r->pstate != WC_PARSE_HEAD && r->expect_continue) {
        r->expect_continue = 0;
        send_continue(ch);
    }
    return;

nomem:
    wc_server_log(ch->srv, 40, "Out of memory: connection dropped");
    wc_channel_close(ch);
}

/* The backlog has drained: parse what was kept, then read again.  During
 * a stop too: the requests behind the backlog are answered, and the
 * stop's grace (wc_channel_sweep) bounds the wait for more. */
static void
resume(wc_channel_t *ch)
{
    if (ch->state != WC_CONN_PAUSED)
        return;
    wc_busy_t *b = ch->b;
    char *p = b->leftover;
    size_t n = b->leftover_len;
    b->leftover = NULL;
    b->leftover_len = 0;
    set_state(ch, WC_CONN_IDLE);
    if (p != NULL && ch->state == WC_CONN_IDLE)
        feed(ch, p, n);
    free(p);
    if (ch->srv->stop_at)
        stop_idle(ch);
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
    if (ch->b == NULL && busy_new(ch) == NULL) {
        wc_channel_close(ch);
        return;
    }
    wc_busy_t *b = ch->b;
    if (b->req != NULL || b->leftover != NULL)
        b->sending = 1;     /* cut off: the rest may still be coming */
    wc_request_free(b->req);
    b->req = NULL;
    b->continue_owed = 0;
    free(b->leftover);
    b->leftover = NULL;
    b->leftover_len = 0;
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
    wc_busy_t *b = ch->b;
    if (ch->state == WC_CONN_CLOSED || b == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    int broken = b->broken;
    int owed = b->busy || b->npending > 0 || b->out.bytes > 0 || b->writing
               || b->wblk != NULL;
    if (ch->state == WC_CONN_DONE && owed)
        b->wants |= WC_EV_IDLE;
    pthread_mutex_unlock(&b->lock);
    if (broken)
        wc_channel_close(ch);
    else if (ch->state == WC_CONN_DONE && !owed)
        linger(ch);
}

/* Everything owed is written.  Closing a socket with unread input makes
 * the kernel send a reset, which destroys response bytes still in flight
 * to the client; so when the client may still be sending (bytes came
 * after the last request, a request was cut off or refused, or input is
 * waiting now), shut the write side (the client reads our FIN after the
 * last byte) and read and discard until the client closes too, for at
 * most LINGER_MS.  Otherwise close at once: with nothing unread the FIN
 * follows the response, and a client that sends nothing more costs no
 * wake-up for its own FIN.  This is nginx's "lingering_close on". */
static void
linger(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    pthread_mutex_lock(&b->lock);
    if (ch->tls)
        wc_tls_close_notify(ch->tls);   /* a clean end, not a cut */
    int eof = b->peer_eof;
    pthread_mutex_unlock(&b->lock);
    if (eof) {
        wc_channel_close(ch);
        return;
    }
    if (!b->sending) {
        char c;
        ssize_t n;
        do {
            n = recv(ch->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            /* Nothing waits (EAGAIN), the client closed (0), or an
             * error: nothing for a reset to destroy. */
            wc_channel_close(ch);
            return;
        }
        b->sending = 1;
    }
    if (shutdown(ch->fd, SHUT_WR) < 0) {
        wc_channel_close(ch);
        return;
    }
    b->linger_end = wc_now_ms() + LINGER_MS;
    set_state(ch, WC_CONN_LINGER);
}

/* The loop's side of a kick: a worker queued output, let the channel go,
 * ended the connection, or made room in the backlog. */
void
wc_channel_kicked(wc_channel_t *ch)
{
    if (ch->kind == WC_KIND_STREAM) {
        wc_h2_stream_kicked(ch);
        return;
    }
    wc_busy_t *b = ch->b;
    pthread_mutex_lock(&b->lock);
    b->kicked = 0;
    unsigned ev = b->ev;
    b->ev = 0;
    b->wants &= ~ev;
    int idle = !b->busy && b->npending == 0;
    /* The 100 Continue owed to the request still arriving (send_continue)
     * goes once nothing of an earlier response can follow it, and never
     * after a response that ended the connection. */
    if (b->continue_owed && b->req != NULL && !(ev & WC_EV_CLOSE)
        && !b->broken) {
        if (idle) {
            b->continue_owed = 0;
            if (wc_outq_append(&b->out, continue_line,
                               sizeof(continue_line) - 1) < 0)
                b->broken = 1;
        } else {
            b->wants |= WC_EV_IDLE;
        }
    }
    pthread_mutex_unlock(&b->lock);
    if (ch->state != WC_CONN_CLOSED) {
        if (ev & WC_EV_CLOSE)
            finish_input(ch);
        if (ev & WC_EV_ROOM)
            resume(ch);
        wc_channel_flush(ch);   /* also maybe_close */
        if (ev & WC_EV_IDLE)
            shed(ch);
    }
    wc_channel_unref(ch);
}

/* Graceful: every request received completely is answered (the last one
 * with Connection: close), a request partly received is read to its end
 * (channel_timeout and shutdown_timeout bound that), and a connection
 * between requests gets STOP_GRACE_MS once it has nothing to do, to send
 * the request it may already have on the wire (answered with Connection:
 * close); then it closes, lingering (wc_channel_sweep).  Hard: close
 * now. */
void
wc_channel_stop(wc_channel_t *ch, int hard)
{
    if (ch->state == WC_CONN_CLOSED)
        return;
    if (hard) {
        wc_channel_close(ch);
        return;
    }
    if (ch->kind == WC_KIND_H2 && ch->state == WC_CONN_IDLE) {
        wc_h2_stop(ch);
        return;
    }
    stop_idle(ch);
}

/* Between requests (IDLE, or HEAD with nothing but empty lines yet)? */
static int
between_requests(const wc_channel_t *ch)
{
    return ch->state == WC_CONN_IDLE
           || (ch->state == WC_CONN_HEAD && ch->b->req->head.len == 0);
}

/* A stop finds the connection between requests (or paused with nothing
 * read behind its backlog): if requests are queued,
 * the last of them says close and nothing more is read; if one is in
 * service with nothing behind it, its response says close unless its head
 * is already written (wc_channel_keep_alive); a response that has already
 * promised keep-alive gets the grace (wc_channel_sweep). */
static void
stop_idle(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    if (b == NULL)
        return;
    /* PAUSED with nothing read behind the backlog is between requests
     * too: bytes the socket holds unread are not received yet. */
    if (!between_requests(ch)
        && !(ch->state == WC_CONN_PAUSED && b->leftover == NULL))
        return;
    int queued = 0;
    pthread_mutex_lock(&b->lock);
    if (b->pend_tail) {
        b->pend_tail->keep_alive = 0;
        queued = 1;
    } else if (b->busy) {
        atomic_store(&b->stop_close, 1);
    }
    pthread_mutex_unlock(&b->lock);
    if (queued)
        finish_input(ch);
}

void
wc_channel_close(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_CLOSED)
        return;
    set_state(ch, WC_CONN_CLOSED);
    atomic_store_explicit(&ch->gone, WC_GONE_CLOSED, memory_order_relaxed);
    wc_busy_t *b = ch->b;
    wc_request_t *r = NULL;
    if (b != NULL && b->h2)
        wc_h2_free(ch);     /* its streams end */
    if (b != NULL) {
        pthread_mutex_lock(&b->lock);
        b->broken = 1;
        /* A queued task still holds the channel: it finds `broken` and
         * drops its requests and output; here we drop the ones nobody
         * holds. */
        if (!b->busy) {
            r = take_pending(b);
            release_output(ch);
        }
        wc_channel_wake_waiters(ch);
        pthread_mutex_unlock(&b->lock);
        free_requests(r);
        wc_request_free(b->req);
        b->req = NULL;
        free(b->leftover);
        b->leftover = NULL;
        uncount_busy(ch);
    }
    if (ch->prev)
        ch->prev->next = ch->next;
    else
        ch->srv->channels = ch->next;
    if (ch->next)
        ch->next->prev = ch->prev;
    ch->prev = NULL;
    /* With `broken` set under the lock no worker writes to fd any more, so
     * it can go now (which also takes it out of the epoll set).  The
     * channel's memory stays until the loop's next iteration
     * (wc_channel_finish_closes): events already fetched for it, and the
     * caller, may still look at it. */
    wc_tls_conn_free(ch->tls);
    ch->tls = NULL;
    close(ch->fd);
    ch->fd = -1;
    wc_server_t *srv = ch->srv;
    ch->next = srv->closed;
    srv->closed = ch;
    wc_server_reap_soon(srv);
}

/* Loop, once an iteration: the channels closed since drop the loop's
 * reference (the last one frees). */
void
wc_channel_finish_closes(wc_server_t *srv)
{
    wc_channel_t *ch = srv->closed;
    srv->closed = NULL;
    while (ch) {
        wc_channel_t *next = ch->next;
        WC_ASSERT(ch->state == WC_CONN_CLOSED);
        srv->nchannels--;
        wc_m_set(srv->m, WC_M_CONNECTIONS, srv->nchannels);
        wc_channel_unref(ch);
        wc_server_channel_closed(srv);
        ch = next;
    }
}

/* Drop one reference; the last one frees.  The loop's reference is only
 * dropped after the close (wc_channel_finish_closes). */
void
wc_channel_unref(wc_channel_t *ch)
{
    if (atomic_fetch_sub(&ch->refs, 1) != 1)
        return;
    WC_ASSERT(ch->state == WC_CONN_CLOSED);
    if (ch->b)
        busy_free(ch->b);
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
 * after STOP_GRACE_MS; a linger ends at b->linger_end.  A connection idle
 * SHED_IDLE_MS gives its busy part back. */
void
wc_channel_sweep(wc_channel_t *ch, uint64_t now)
{
    uint64_t limit = ch->srv->cfg.channel_timeout_ms;
    uint64_t stop_at = ch->srv->stop_at;
    wc_busy_t *b = ch->b;
    if (ch->state == WC_CONN_CLOSED)
        return;
    if (ch->state == WC_CONN_HANDSHAKE) {
        /* A slow handshake is a slowloris too: channel_timeout from the
         * accept.  A stop does not wait for one. */
        if (stop_at || (now > ch->in_at && now - ch->in_at > limit))
            wc_channel_close(ch);
        return;
    }
    if (ch->state == WC_CONN_LINGER) {
        if (now >= b->linger_end)
            wc_channel_close(ch);
        return;
    }
    if (ch->kind == WC_KIND_H2 && ch->state == WC_CONN_IDLE) {
        wc_h2_sweep(ch, now);
        return;
    }
    int idle = 1, waiting = 0;
    uint64_t out_at = 0;
    if (b != NULL) {
        pthread_mutex_lock(&b->lock);
        idle = !b->busy && b->npending == 0;
        waiting = b->out.bytes > 0 || b->writing || b->wblk != NULL;
        out_at = atomic_load_explicit(&b->out_at, memory_order_relaxed);
        pthread_mutex_unlock(&b->lock);
    }
    if (waiting && now > out_at && now - out_at > limit) {
        wc_channel_close(ch);   /* stalled: the client reads nothing */
        return;
    }
    if (!idle || waiting)
        return;
    uint64_t since;
    switch (between_requests(ch) ? WC_CONN_IDLE : ch->state) {
    case WC_CONN_IDLE:
        /* Empty lines do not move the clock: it runs from the first. */
        if (ch->state == WC_CONN_HEAD)
            since = b->head_at;
        else
            since = ch->in_at > out_at ? ch->in_at : out_at;
        if (stop_at) {
            if (stop_at > since)
                since = stop_at;
            if (now > since && now - since >= STOP_GRACE_MS) {
                finish_input(ch);   /* the stop's grace is over */
                return;
            }
        }
        if (now > since && now - since >= SHED_IDLE_MS)
            shed(ch);
        break;
    case WC_CONN_HEAD:
        since = b->head_at;
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

/* Workers, GIL held or not; caller holds b->lock.  Ask the loop to look
 * at this channel. */
void
wc_channel_kick(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    if (b->kicked)
        return;
    b->kicked = 1;
    atomic_fetch_add(&ch->refs, 1);
    wc_server_t *srv = ch->srv;
    pthread_mutex_lock(&srv->qlock);
    b->kick_next = srv->kick_head;
    srv->kick_head = ch;
    if (srv->async_live)
        uv_async_send(&srv->async);
    pthread_mutex_unlock(&srv->qlock);
}

/* b->lock held.  Post an event: only the loop's wanted ones (and a close)
 * are recorded, and they kick it.  An unwanted bit left in b->ev would
 * clear a later want when some other kick is drained. */
static void
post(wc_channel_t *ch, unsigned ev)
{
    wc_busy_t *b = ch->b;
    unsigned hit = ev & (b->wants | WC_EV_CLOSE);
    b->ev |= hit;
    if (hit || b->broken)
        wc_channel_kick(ch);
}

/* b->lock held.  The worker lets the channel go: what it held back goes
 * out, and the loop hears of it if it waits for that, or if the server
 * sheds the busy parts of quiescent connections. */
static void
release_locked(wc_channel_t *ch, unsigned ev)
{
    wc_busy_t *b = ch->b;
    b->busy = 0;
    atomic_fetch_sub(&ch->srv->nbusy, 1);
    if (b->out.head && !b->writing
        && wc_channel_send_locked(ch, NULL, NULL, 0, 0) < 0)
        b->broken = 1;
    if (b->broken)
        release_output(ch);
    if (atomic_load_explicit(&ch->srv->shed, memory_order_relaxed))
        b->wants |= WC_EV_IDLE;
    post(ch, ev | WC_EV_IDLE);
}

/* The server is being destroyed after a hard stop: a task nobody will
 * serve lets its channel go; what was queued for it is never sent. */
void
wc_channel_drop_task(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    pthread_mutex_lock(&b->lock);
    b->busy = 0;
    release_output(ch);
    pthread_mutex_unlock(&b->lock);
    wc_channel_unref(ch);
}

wc_request_t *
wc_channel_take(wc_channel_t *ch, int *more)
{
    wc_busy_t *b = ch->b;
    wc_request_t *req = NULL, *drop = NULL;
    pthread_mutex_lock(&b->lock);
    WC_ASSERT(b->busy);
    if (b->pend_head == NULL || b->broken) {
        if (b->broken)
            drop = take_pending(b);
        release_locked(ch, 0);
    } else {
        req = pop_pending(b);
        *more = b->pend_head != NULL;
        if ((b->wants & WC_EV_ROOM) && backlog_low(ch))
            post(ch, WC_EV_ROOM);
    }
    pthread_mutex_unlock(&b->lock);
    free_requests(drop);
    return req;
}

void
wc_channel_end(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    pthread_mutex_lock(&b->lock);
    WC_ASSERT(b->busy);
    wc_request_t *drop = take_pending(b);
    release_locked(ch, WC_EV_CLOSE);
    pthread_mutex_unlock(&b->lock);
    free_requests(drop);
}

void
wc_channel_yield(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    pthread_mutex_lock(&b->lock);
    if (b->out.head && !b->writing
        && wc_channel_send_locked(ch, NULL, NULL, 0, 0) < 0)
        b->broken = 1;
    pthread_mutex_unlock(&b->lock);
    wc_dispatch_push(ch->srv, ch);
}

/* Worker, at the response head.  Read without the lock while no stop
 * asked for it (the common case: one relaxed load). */
int
wc_channel_keep_alive(wc_channel_t *ch, int asked)
{
    wc_busy_t *b = ch->b;
    if (!asked || !atomic_load_explicit(&b->stop_close,
                                        memory_order_relaxed))
        return asked;
    pthread_mutex_lock(&b->lock);
    int ka = b->npending > 0;
    pthread_mutex_unlock(&b->lock);
    return ka;
}
