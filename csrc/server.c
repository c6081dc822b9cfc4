/* server.c: the event loop.  Listeners and accept (with connection_limit),
 * the async wake-up that workers use, the once-a-second sweep (each
 * connection's clocks: channel.c's wc_channel_sweep), signals through
 * Python's wakeup fd, graceful shutdown (bounded by shutdown_timeout) and
 * hard shutdown, and the queue of log lines that the loop hands to the log
 * thread to emit.
 *
 * GIL map: everything here runs on the loop thread without the GIL, except
 * wc_server_request_close and wc_server_log, which any thread may call and
 * which only take qlock.
 *
 * Listeners are uv_poll_t handles, accepted on with accept4; client
 * sockets are in an epoll set of the server's own (srv->epfd, one
 * uv_poll_t for all of them), and the loop reads and writes them itself
 * (channel.c, channel_out.c).
 *
 * SIGPIPE: the loop thread writes with sendfile, which cannot pass
 * MSG_NOSIGNAL (everything else does), so it blocks SIGPIPE while it runs
 * and discards a pending one before it unblocks: a process whose SIGPIPE
 * disposition is the default is not killed by a client that goes away.
 *
 * Scheduling: the loop and the workers run under SCHED_BATCH (see
 * wc_thread_batch); the thread that called serve() gets its old policy
 * back when the loop returns.
 */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_listen(uv_poll_t *p, int status, int events);
static void on_async(uv_async_t *a);
static void on_sweep(uv_timer_t *t);
static void on_prepare(uv_prepare_t *p);
static void on_tick(uv_timer_t *t);
static void on_signal_fd(uv_poll_t *p, int status, int events);
static void on_grace(uv_timer_t *t);
static void close_any(uv_handle_t *h, void *arg);
static void accept_some(wc_server_t *srv, wc_listener_t *ls, int max,
                        int over_limit);
static void retry_held(wc_server_t *srv);
static void begin_stop(wc_server_t *srv, int level, const char *why);
static void check_exit(wc_server_t *srv);
static void stop_if_asked(wc_server_t *srv, int close_req);
static void close_reason(wc_server_t *srv, char *why);

#define SWEEP_MS 1000
#define ACCEPT_BATCH 64     /* connections accepted per readiness event */
#define EPOLL_BATCH 256     /* connection events fetched at a time */
#define DRAIN_MAX 1024      /* accepted from the queue of a stopping one */

int
wc_server_init(wc_server_t *srv)
{
    int rv = uv_loop_init(&srv->loop);
    if (rv < 0)
        return rv;
    srv->loop.data = srv;
    rv = uv_async_init(&srv->loop, &srv->async, on_async);
    if (rv < 0) {
        uv_loop_close(&srv->loop);
        return rv;
    }
    srv->async.data = srv;
    uv_timer_init(&srv->loop, &srv->sweep);
    srv->sweep.data = srv;
    uv_timer_init(&srv->loop, &srv->tick);
    srv->tick.data = srv;
    uv_timer_init(&srv->loop, &srv->grace);
    srv->grace.data = srv;
    atomic_init(&srv->nbusy, 0);
    uv_prepare_init(&srv->loop, &srv->wake);
    srv->wake.data = srv;
    uv_prepare_start(&srv->wake, on_prepare);
    uv_unref((uv_handle_t *)&srv->wake);
    uv_idle_init(&srv->loop, &srv->reap);
    srv->reap.data = srv;
    uv_idle_init(&srv->loop, &srv->ready_idle);
    srv->ready_idle.data = srv;
    srv->sigfd = -1;
    /* The connections' sockets are polled in an epoll set of our own,
     * which libuv polls as one descriptor: adding a socket is one
     * epoll_ctl, and its close takes it out (uv_poll_t costs five system
     * calls a connection and 160 bytes). */
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->epfd < 0) {
        rv = -errno;
        goto error;
    }
    rv = uv_poll_init(&srv->loop, &srv->epoll, srv->epfd);
    if (rv < 0) {
        close(srv->epfd);
        srv->epfd = -1;
        goto error;
    }
    srv->epoll.data = srv;
    atomic_init(&srv->stopping, 0);
    pthread_mutex_init(&srv->qlock, NULL);
    pthread_cond_init(&srv->qcond, NULL);
    pthread_cond_init(&srv->log_cond, NULL);
    srv->async_live = 1;
    return 0;

error:
    /* Nothing ran yet: close what was opened and let libuv finish. */
    uv_walk(&srv->loop, close_any, NULL);
    uv_run(&srv->loop, UV_RUN_NOWAIT);
    uv_loop_close(&srv->loop);
    return rv;
}

/* Connections are ready: dispatch what the epoll set reports, a batch at
 * a time (level-triggered: what is left is reported again). */
static void
on_epoll(uv_poll_t *p, int status, int events)
{
    wc_server_t *srv = p->data;
    struct epoll_event ev[EPOLL_BATCH];
    for (int round = 0; round < 4; round++) {
        int n;
        do {
            n = epoll_wait(srv->epfd, ev, EPOLL_BATCH, 0);
        } while (n < 0 && errno == EINTR);
        for (int i = 0; i < n; i++)
            wc_channel_io(ev[i].data.ptr, ev[i].events);
        if (n < EPOLL_BATCH)
            break;
    }
}

/* Channels closed since the last turn give the loop's reference back, at
 * the start of the next iteration (the idle handle keeps the loop from
 * blocking until then). */
static void
on_reap(uv_idle_t *h)
{
    wc_server_t *srv = h->data;
    uv_idle_stop(h);
    wc_channel_finish_closes(srv);
}

void
wc_server_reap_soon(wc_server_t *srv)
{
    if (!uv_is_closing((uv_handle_t *)&srv->reap))
        uv_idle_start(&srv->reap, on_reap);
}

/* TLS channels with records read ahead: read at the start of the next
 * iteration, and of every one after while some are left (the idle handle
 * keeps the loop from blocking in the meantime). */
static void
on_ready(uv_idle_t *h)
{
    wc_server_t *srv = h->data;
    if (wc_channel_run_ready(srv) == 0)
        uv_idle_stop(h);
}

void
wc_server_ready_soon(wc_server_t *srv)
{
    if (!uv_is_closing((uv_handle_t *)&srv->ready_idle))
        uv_idle_start(&srv->ready_idle, on_ready);
}

/* Adopt a copy of a bound, listening socket; the caller keeps its own.
 * `owned`: the socket is the server's own, shut down when a stop begins so
 * that new connections are refused at once; otherwise (sockets= from the
 * caller, inherited ones) it is only no longer accepted on.  `plain`: its
 * connections speak plain HTTP even when the server has a certificate. */
int
wc_server_listen(wc_server_t *srv, int index, int fd, int is_unix, int owned,
                 int plain)
{
    wc_listener_t *ls = &srv->listeners[index];
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0)
        return -errno;
    ls->srv = srv;
    ls->index = index;
    ls->is_unix = is_unix;
    int rv = uv_poll_init(&srv->loop, &ls->poll, dfd);
    if (rv < 0) {
        close(dfd);
        return rv;
    }
    ls->fd = dfd;
    ls->open = 1;
    ls->owned = owned;
    ls->plain = plain;
    ls->poll.data = ls;
    return 0;
}

/* Discard a SIGPIPE raised by this thread's writes while it was blocked. */
static void
drop_sigpipe(const sigset_t *pipe_only)
{
    struct timespec zero = {0, 0};
    while (sigtimedwait(pipe_only, NULL, &zero) > 0)
        ;
}

static int run_loop(wc_server_t *srv, int sigfd);

/* Put the calling thread under SCHED_BATCH; *old gets its policy, or -1.
 *
 * Every readable socket wakes the loop, and under the default policy the
 * woken loop preempts the worker that is serving on the same CPU after a
 * few microseconds, a handful of requests at a time: twice the context
 * switches and cold caches on both sides.  SCHED_BATCH tells the scheduler
 * these threads are throughput work, so a wake-up does not preempt the
 * running one; the loop runs at the worker's next pause and finds a larger
 * batch.  It needs no privilege and does not change the threads' share of
 * the CPU against other processes.  A failure is harmless: the threads
 * simply keep the default policy. */
void
wc_thread_batch(int *old, struct sched_param *old_param)
{
    struct sched_param p = {0};
    int policy = sched_getscheduler(0);
    if (old != NULL) {
        *old = policy;
        if (policy >= 0 && sched_getparam(0, old_param) != 0)
            *old = -1;
    }
    if (policy == SCHED_OTHER)
        (void)sched_setscheduler(0, SCHED_BATCH, &p);
}

int
wc_server_run(wc_server_t *srv, int sigfd)
{
    sigset_t pipe_only, old;
    int old_policy;
    struct sched_param old_param;
    wc_thread_batch(&old_policy, &old_param);
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    int rv = run_loop(srv, sigfd);
    /* The loop has returned: let the log thread finish. */
    pthread_mutex_lock(&srv->qlock);
    srv->log_stop = 1;
    pthread_cond_broadcast(&srv->log_cond);
    pthread_mutex_unlock(&srv->qlock);
    if (!sigismember(&old, SIGPIPE)) {
        drop_sigpipe(&pipe_only);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (old_policy == SCHED_OTHER)
        (void)sched_setscheduler(0, old_policy, &old_param);
    return rv;
}

static int
run_loop(wc_server_t *srv, int sigfd)
{
    int rv = 0;
    pthread_mutex_lock(&srv->qlock);
    int closed = srv->close_requested;
    srv->running = 1;       /* from now on the async handle is live */
    pthread_mutex_unlock(&srv->qlock);

    rv = uv_poll_start(&srv->epoll, UV_READABLE, on_epoll);
    if (rv < 0)
        goto done;
    for (int i = 0; i < srv->nlisteners && !closed; i++) {
        wc_listener_t *ls = &srv->listeners[i];
        if (listen(ls->fd, srv->cfg.backlog) < 0) {
            rv = -errno;
            goto done;
        }
        rv = uv_poll_start(&ls->poll, UV_READABLE, on_listen);
        if (rv < 0)
            goto done;
    }
    /* Timeouts are checked every second, whatever cleanup_interval says:
     * an idle connection is closed within channel_timeout + 1 s. */
    uv_timer_start(&srv->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    if (sigfd >= 0) {
        srv->sigfd = sigfd;
        rv = uv_poll_init(&srv->loop, &srv->sigpoll, sigfd);
        if (rv < 0)
            goto done;
        srv->sigpoll.data = srv;
        uv_poll_start(&srv->sigpoll, UV_READABLE, on_signal_fd);
    }
    if (closed) {
        char why[sizeof(srv->close_why)];
        close_reason(srv, why);
        begin_stop(srv, 1, why);
    }
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    return 0;

done:
    /* Could not start: unwind through the normal stop path. */
    begin_stop(srv, 2, NULL);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    return rv;
}

/* Connections wait on a listener (level-triggered: a listener with more
 * than ACCEPT_BATCH waiting is called again in the next iteration, after
 * the other sockets had their turn). */
static void
on_listen(uv_poll_t *p, int status, int events)
{
    wc_listener_t *ls = p->data;
    wc_server_t *srv = ls->srv;

    if (status < 0) {
        if (srv->cfg.log_socket_errors)
            wc_server_log(srv, 30, "server accept() threw an exception: %s",
                          uv_strerror(status));
        return;
    }
    if (atomic_load(&srv->stopping))
        return;
    accept_some(srv, ls, ACCEPT_BATCH, 0);
    /* A close() asked for meanwhile stops accepting now, not after more
     * connections (max_requests counts on it). */
    pthread_mutex_lock(&srv->qlock);
    int close_req = srv->close_requested;
    pthread_mutex_unlock(&srv->qlock);
    stop_if_asked(srv, close_req);
}

/* Stop polling a listener: its connections wait in the kernel's queue
 * (where a sibling process sharing the socket may take them) until
 * retry_held polls it again. */
static void
hold(wc_listener_t *ls)
{
    if (!ls->held && ls->open) {
        ls->held = 1;
        uv_poll_stop(&ls->poll);
    }
}

/* Accept up to `max` of the connections waiting on `ls`.  At
 * connection_limit (unless `over_limit`: a stop takes in what waits) the
 * listener is held. */
static void
accept_some(wc_server_t *srv, wc_listener_t *ls, int max, int over_limit)
{
    for (int i = 0; i < max; i++) {
        if (!over_limit && srv->nchannels >= srv->cfg.connection_limit) {
            wc_m_own_add(srv->m, WC_M_LIMITED, 1);
            hold(ls);
            if (!srv->limit_logged) {
                srv->limit_logged = 1;
                wc_server_log(srv, 30, "total open connections reached the "
                                       "connection limit, no longer "
                                       "accepting new connections");
            }
            return;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        int fd = accept4(ls->fd, (struct sockaddr *)&ss, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EINTR || err == ECONNABORTED)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            /* Out of fds or memory: try again on the sweep, or when a
             * connection closes. */
            if (err == EMFILE || err == ENFILE || err == ENOBUFS
                || err == ENOMEM)
                hold(ls);
            if (srv->cfg.log_socket_errors)
                wc_server_log(srv, 30, "server accept() threw an "
                              "exception: %s", strerror(err));
            return;
        }
        int rv = wc_channel_open(srv, fd, ls->index, (struct sockaddr *)&ss);
        if (rv < 0 && srv->cfg.log_socket_errors)
            wc_server_log(srv, 30, "server accept() threw an exception: %s",
                          uv_strerror(rv));
    }
}

/* Poll the held listeners again while there is room under the limit. */
static void
retry_held(wc_server_t *srv)
{
    for (int i = 0; i < srv->nlisteners; i++) {
        wc_listener_t *ls = &srv->listeners[i];
        if (ls->held && ls->open
            && srv->nchannels < srv->cfg.connection_limit) {
            ls->held = 0;
            if (uv_poll_start(&ls->poll, UV_READABLE, on_listen) < 0)
                ls->held = 1;
        }
    }
}

/* A channel's handle is closed: room under the limit, or the last one of a
 * stopping server. */
void
wc_server_channel_closed(wc_server_t *srv)
{
    if (srv->nchannels < srv->cfg.connection_limit
        && !atomic_load(&srv->stopping)) {
        retry_held(srv);
        if (srv->limit_logged
            && srv->nchannels < srv->cfg.connection_limit) {
            srv->limit_logged = 0;
            wc_server_log(srv, 20, "total open connections dropped below "
                                   "the connection limit, listening again");
        }
    }
    if (atomic_load(&srv->stopping) && srv->nchannels == 0)
        check_exit(srv);
}

static void
on_async(uv_async_t *a)
{
    wc_server_t *srv = a->data;
    pthread_mutex_lock(&srv->qlock);
    wc_channel_t *kicks = srv->kick_head;
    srv->kick_head = NULL;
    int close_req = srv->close_requested;
    wc_tls_t *tls = srv->tls_next;
    srv->tls_next = NULL;
    pthread_mutex_unlock(&srv->qlock);
    if (tls) {
        wc_tls_free(srv->tls);  /* its connections keep it alive */
        srv->tls = tls;
    }

    while (kicks) {
        wc_channel_t *next = kicks->b->kick_next;
        wc_channel_kicked(kicks);
        kicks = next;
    }
    stop_if_asked(srv, close_req);
    check_exit(srv);
}

/* Right before the loop would block: everything queued in this
 * iteration (by reads, accepts, close callbacks) is handed over with one
 * wake-up. */
static void
on_prepare(uv_prepare_t *p)
{
    wc_server_t *srv = p->data;
    wc_dispatch_wake(srv);
    /* Tick every millisecond while output is held back (a pipelined batch,
     * a fast generator's blocks) or idle workers may be needed. */
    if (srv->tick_on || srv->finished)
        return;
    pthread_mutex_lock(&srv->qlock);
    int start = wc_dispatch_want_tick(srv);
    if (start)
        srv->tick_on = 1;
    pthread_mutex_unlock(&srv->qlock);
    if (start)
        uv_timer_start(&srv->tick, on_tick, 1, 1);
}

static wc_channel_t *
take_deferred(wc_server_t *srv)
{
    pthread_mutex_lock(&srv->qlock);
    wc_channel_t *list = srv->defer_head;
    srv->defer_head = NULL;
    pthread_mutex_unlock(&srv->qlock);
    return list;
}

static void
on_tick(uv_timer_t *t)
{
    wc_server_t *srv = t->data;
    wc_dispatch_tick(srv);
    wc_channel_t *ch = take_deferred(srv);
    while (ch) {
        wc_channel_t *next = ch->b->defer_next;
        pthread_mutex_lock(&ch->b->lock);
        ch->b->deferred = 0;
        pthread_mutex_unlock(&ch->b->lock);
        wc_channel_flush(ch);
        wc_channel_unref(ch);
        ch = next;
    }
    pthread_mutex_lock(&srv->qlock);
    int stop = !wc_dispatch_want_tick(srv);
    if (stop)
        srv->tick_on = 0;
    pthread_mutex_unlock(&srv->qlock);
    if (stop)
        uv_timer_stop(&srv->tick);
}

/* Once a second: let each connection's clocks close it (timeouts, a
 * stop's grace, a linger's end: channel.c decides), accept on listeners whose accept failed, and let
 * the log thread report a long task queue. */
static void
on_sweep(uv_timer_t *t)
{
    wc_server_t *srv = t->data;
    uint64_t now = wc_now_ms();
    wc_channel_t *ch = srv->channels;
    while (ch) {
        wc_channel_t *next = ch->next;
        wc_channel_sweep(ch, now);
        ch = next;
    }
    if (!atomic_load(&srv->stopping))
        retry_held(srv);
    wc_dispatch_sweep(srv);
    pthread_mutex_lock(&srv->qlock);
    if (srv->depth_warn) {
        srv->depth_due = 1;
        pthread_cond_signal(&srv->log_cond);
    }
    pthread_mutex_unlock(&srv->qlock);
}

/* Python's signal.set_wakeup_fd writes one byte per signal; SIGINT and
 * SIGTERM stop the server: the first gracefully, the next at once. */
static void
on_signal_fd(uv_poll_t *p, int status, int events)
{
    wc_server_t *srv = p->data;
    unsigned char buf[64];
    ssize_t n;
    while ((n = read(srv->sigfd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == SIGINT || buf[i] == SIGTERM) {
                int level = atomic_load(&srv->stopping) ? 2 : 1;
                begin_stop(srv, level,
                           buf[i] == SIGINT ? "SIGINT" : "SIGTERM");
            }
        }
    }
}

/* `why`, if not NULL, is what the stop line names instead of "close()
 * called": a worker process's main thread passes the signal it got. */
void
wc_server_request_close(wc_server_t *srv, const char *why)
{
    pthread_mutex_lock(&srv->qlock);
    if (srv->close_requested < 2)
        srv->close_requested++;
    if (why != NULL)
        snprintf(srv->close_why, sizeof(srv->close_why), "%s", why);
    if (srv->running && srv->async_live)
        uv_async_send(&srv->async);
    pthread_mutex_unlock(&srv->qlock);
}

/* Stop listening.  Our own sockets are shut down, so the kernel refuses
 * new connections at once rather than queueing them for a server that
 * will never accept them; a graceful stop first takes in (and so answers)
 * the connections already waiting in their queue.  The caller's sockets
 * (sockets=, or shared with sibling processes) are left listening, their
 * queue untouched, for whoever serves them next. */
static void
close_listeners(wc_server_t *srv, int graceful)
{
    for (int i = 0; i < srv->nlisteners; i++) {
        wc_listener_t *ls = &srv->listeners[i];
        if (!ls->open)
            continue;
        if (graceful && ls->owned)
            accept_some(srv, ls, DRAIN_MAX, 1);
        ls->open = 0;
        if (ls->owned)
            shutdown(ls->fd, SHUT_RDWR);
        /* uv_close stops the watcher at once: the fd can go now. */
        uv_close((uv_handle_t *)&ls->poll, NULL);
        close(ls->fd);
        ls->fd = -1;
    }
}

static void
begin_stop(wc_server_t *srv, int level, const char *why)
{
    int was = atomic_load(&srv->stopping);
    if (was >= level)
        return;
    atomic_store(&srv->stopping, level);
    pthread_mutex_lock(&srv->qlock);
    if (srv->close_requested < level)
        srv->close_requested = level;
    pthread_mutex_unlock(&srv->qlock);
    if (was == 0)
        srv->stop_at = wc_now_ms();
    close_listeners(srv, level == 1);
    if (was == 0 && why) {
        int busy = atomic_load(&srv->nbusy);
        wc_server_log(srv, 20, "Shutting down (%s): connections open: %llu, "
                      "requests in progress: %d", why,
                      (unsigned long long)srv->nchannels, busy);
    }
    if (level == 1 && srv->cfg.shutdown_timeout_ms > 0)
        uv_timer_start(&srv->grace, on_grace, srv->cfg.shutdown_timeout_ms,
                       0);
    else if (level >= 2)
        uv_timer_stop(&srv->grace);
    wc_channel_t *ch = srv->channels;
    while (ch) {
        wc_channel_t *next = ch->next;
        wc_channel_stop(ch, level >= 2);
        ch = next;
    }
    check_exit(srv);
}

/* close() was called `close_req` times (srv->close_requested, read under
 * qlock): stop at that level if not already. */
static void
stop_if_asked(wc_server_t *srv, int close_req)
{
    if (close_req > atomic_load(&srv->stopping)) {
        char why[sizeof(srv->close_why)];
        close_reason(srv, why);
        begin_stop(srv, close_req >= 2 ? 2 : 1, why);
    }
}

/* What close() gave as its reason, or "close() called", into `why`
 * (sizeof srv->close_why bytes). */
static void
close_reason(wc_server_t *srv, char *why)
{
    pthread_mutex_lock(&srv->qlock);
    snprintf(why, sizeof(srv->close_why), "%s",
             srv->close_why[0] ? srv->close_why : "close() called");
    pthread_mutex_unlock(&srv->qlock);
}

/* shutdown_timeout has passed: cut off what is left. */
static void
on_grace(uv_timer_t *t)
{
    wc_server_t *srv = t->data;
    int busy = atomic_load(&srv->nbusy);
    wc_server_log(srv, 30, "Shutdown timeout (%.3g s) reached: closing the "
                  "remaining connections (open: %llu, requests cut off: %d)",
                  (double)srv->cfg.shutdown_timeout_ms / 1000.0,
                  (unsigned long long)srv->nchannels, busy);
    begin_stop(srv, 2, NULL);
}

static void
close_handle(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

/* Once the connections are gone, stop the workers; once they have left
 * the pool, close the loop's own handles so uv_run returns.  A hard stop
 * does not wait for workers stuck in the application. */
static void
check_exit(wc_server_t *srv)
{
    int level = atomic_load(&srv->stopping);
    if (level == 0 || srv->finished)
        return;
    if (srv->nchannels > 0 && level < 2)
        return;
    pthread_mutex_lock(&srv->qlock);
    srv->workers_stop = 1;
    pthread_cond_broadcast(&srv->qcond);
    int live = srv->live_workers;
    if (live == 0 || level >= 2)
        srv->running = 0;
    pthread_mutex_unlock(&srv->qlock);
    if (srv->nchannels > 0)
        return;     /* hard stop: wait for the handles to close */
    if (live > 0 && level < 2)
        return;     /* the last worker out sends the async */
    srv->finished = 1;
    wc_server_log(srv, 20, "Server stopped");
    uv_timer_stop(&srv->sweep);
    close_handle((uv_handle_t *)&srv->sweep);
    uv_timer_stop(&srv->tick);
    close_handle((uv_handle_t *)&srv->tick);
    uv_timer_stop(&srv->grace);
    close_handle((uv_handle_t *)&srv->grace);
    for (wc_channel_t *ch = take_deferred(srv), *next; ch; ch = next) {
        next = ch->b->defer_next;
        wc_channel_unref(ch);
    }
    close_handle((uv_handle_t *)&srv->epoll);
    close_handle((uv_handle_t *)&srv->reap);
    wc_channel_drop_ready(srv);
    close_handle((uv_handle_t *)&srv->ready_idle);
    close_handle((uv_handle_t *)&srv->wake);
    if (srv->sigfd >= 0) {
        uv_poll_stop(&srv->sigpoll);
        close_handle((uv_handle_t *)&srv->sigpoll);
    }
    if (live == 0) {
        pthread_mutex_lock(&srv->qlock);
        srv->async_live = 0;
        pthread_mutex_unlock(&srv->qlock);
        close_handle((uv_handle_t *)&srv->async);
    } else {
        uv_stop(&srv->loop);    /* workers still in the app: leave the
                                   async handle for them */
    }
}

/* A reloaded TLS context: swapped in directly before the loop runs, else
 * handed to the loop (on_async), which alone reads srv->tls then. */
void
wc_server_tls_swap(wc_server_t *srv, wc_tls_t *t)
{
    wc_tls_t *old;
    pthread_mutex_lock(&srv->qlock);
    if (srv->running) {
        old = srv->tls_next;
        srv->tls_next = t;
        if (srv->async_live)
            uv_async_send(&srv->async);
    } else {
        old = srv->tls;
        srv->tls = t;
    }
    pthread_mutex_unlock(&srv->qlock);
    wc_tls_free(old);
}

/* Queue a log line for a worker to emit (the loop never takes the GIL). */
void
wc_server_log(wc_server_t *srv, int level, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(text))
        n = sizeof(text) - 1;
    wc_logmsg_t *m = malloc(sizeof(*m) + (size_t)n + 1);
    if (m == NULL)
        return;
    m->next = NULL;
    m->level = level;
    m->queue_logger = 0;
    memcpy(m->text, text, (size_t)n + 1);
    pthread_mutex_lock(&srv->qlock);
    if (srv->log_tail)
        srv->log_tail->next = m;
    else
        srv->log_head = m;
    srv->log_tail = m;
    pthread_cond_signal(&srv->log_cond);
    pthread_mutex_unlock(&srv->qlock);
}

/* Drop the channel references left in the server's lists by a hard stop:
 * tasks never served, kicks and held-back output never looked at. */
static void
drop_lists(wc_server_t *srv)
{
    pthread_mutex_lock(&srv->qlock);
    wc_channel_t *tasks = srv->task_head, *kicks = srv->kick_head;
    wc_channel_t *defers = srv->defer_head;
    srv->task_head = srv->task_tail = NULL;
    srv->ntasks = 0;
    wc_m_set(srv->m, WC_M_QUEUE, 0);
    srv->kick_head = srv->defer_head = NULL;
    pthread_mutex_unlock(&srv->qlock);
    for (wc_channel_t *ch = tasks, *next; ch; ch = next) {
        next = ch->b->task_next;
        wc_channel_drop_task(ch);
    }
    for (wc_channel_t *ch = kicks, *next; ch; ch = next) {
        next = ch->b->kick_next;
        wc_channel_unref(ch);
    }
    for (wc_channel_t *ch = defers, *next; ch; ch = next) {
        next = ch->b->defer_next;
        wc_channel_unref(ch);
    }
}

static void
close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void
wc_server_destroy(wc_server_t *srv)
{
    /* Handles still open (run() never called, or a hard stop): close them
     * and let the loop finish their callbacks. */
    for (int i = 0; i < srv->nlisteners; i++) {
        wc_listener_t *ls = &srv->listeners[i];
        if (ls->open) {
            ls->open = 0;
            uv_close((uv_handle_t *)&ls->poll, NULL);
            close(ls->fd);
            ls->fd = -1;
        }
    }
    pthread_mutex_lock(&srv->qlock);
    srv->async_live = 0;
    pthread_mutex_unlock(&srv->qlock);
    close_handle((uv_handle_t *)&srv->async);
    close_handle((uv_handle_t *)&srv->sweep);
    close_handle((uv_handle_t *)&srv->tick);
    close_handle((uv_handle_t *)&srv->grace);
    close_handle((uv_handle_t *)&srv->wake);
    close_handle((uv_handle_t *)&srv->epoll);
    close_handle((uv_handle_t *)&srv->reap);
    wc_channel_drop_ready(srv);
    close_handle((uv_handle_t *)&srv->ready_idle);
    if (srv->sigfd >= 0)
        close_handle((uv_handle_t *)&srv->sigpoll);
    /* Connections a hard stop closed, not yet released. */
    wc_channel_finish_closes(srv);
    /* Every worker has left (each holds a reference to the server object
     * that owns us): nothing can add to the lists any more. */
    drop_lists(srv);
    uv_run(&srv->loop, UV_RUN_NOWAIT);
    /* Channel handles closed by a hard stop may still be closing. */
    for (int i = 0; i < 100 && uv_loop_close(&srv->loop) == UV_EBUSY; i++) {
        uv_walk(&srv->loop, close_any, NULL);
        uv_run(&srv->loop, UV_RUN_NOWAIT);
    }
    wc_logmsg_t *m = srv->log_head;
    while (m) {
        wc_logmsg_t *next = m->next;
        free(m);
        m = next;
    }
    free(srv->listeners);
    wc_tls_free(srv->tls);
    srv->tls = NULL;
    wc_tls_free(srv->tls_next);
    srv->tls_next = NULL;
    if (srv->epfd >= 0)
        close(srv->epfd);
    pthread_mutex_destroy(&srv->qlock);
    pthread_cond_destroy(&srv->qcond);
    pthread_cond_destroy(&srv->log_cond);
}
