/* server.c: the event loop.  Listeners and accept (with connection_limit),
 * the async wake-up that workers use, the idle sweep (channel_timeout),
 * signals through Python's wakeup fd, graceful and hard shutdown, and the
 * queue of log lines that the loop hands to a worker to emit.
 *
 * GIL map: everything here runs on the loop thread without the GIL, except
 * wc_server_request_close and wc_server_log, which any thread may call and
 * which only take qlock.
 */
#include "wc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_connection(uv_stream_t *server, int status);
static void on_async(uv_async_t *a);
static void on_sweep(uv_timer_t *t);
static void on_prepare(uv_prepare_t *p);
static void on_tick(uv_timer_t *t);
static void on_signal_fd(uv_poll_t *p, int status, int events);
static void begin_stop(wc_server_t *srv, int level);
static void check_exit(wc_server_t *srv);

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
    atomic_init(&srv->nbusy, 0);
    uv_prepare_init(&srv->loop, &srv->wake);
    srv->wake.data = srv;
    uv_prepare_start(&srv->wake, on_prepare);
    uv_unref((uv_handle_t *)&srv->wake);
    srv->sigfd = -1;
    atomic_init(&srv->stopping, 0);
    pthread_mutex_init(&srv->qlock, NULL);
    pthread_cond_init(&srv->qcond, NULL);
    return 0;
}

/* Adopt a copy of a bound, listening socket; the caller keeps its own. */
int
wc_server_listen(wc_server_t *srv, int index, int fd, int is_unix)
{
    wc_listener_t *ls = &srv->listeners[index];
    int rv;
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0)
        return -errno;
    ls->srv = srv;
    ls->index = index;
    ls->is_unix = is_unix;
    if (is_unix) {
        rv = uv_pipe_init(&srv->loop, &ls->h.pipe, 0);
        if (rv == 0)
            rv = uv_pipe_open(&ls->h.pipe, dfd);
    } else {
        rv = uv_tcp_init(&srv->loop, &ls->h.tcp);
        if (rv == 0)
            rv = uv_tcp_open(&ls->h.tcp, dfd);
    }
    if (rv < 0) {
        close(dfd);
        if (uv_is_active(&ls->h.handle) || ls->h.handle.loop)
            uv_close(&ls->h.handle, NULL);
        return rv;
    }
    ls->fd = dfd;
    ls->open = 1;
    ls->h.handle.data = ls;
    return 0;
}

int
wc_server_run(wc_server_t *srv, int sigfd)
{
    int rv = 0;
    pthread_mutex_lock(&srv->qlock);
    int closed = srv->close_requested;
    srv->running = 1;       /* from now on the async handle is live */
    pthread_mutex_unlock(&srv->qlock);

    for (int i = 0; i < srv->nlisteners && !closed; i++) {
        wc_listener_t *ls = &srv->listeners[i];
        rv = uv_listen(&ls->h.stream, srv->cfg.backlog, on_connection);
        if (rv < 0)
            goto done;
    }
    if (srv->cfg.cleanup_interval_ms > 0)
        uv_timer_start(&srv->sweep, on_sweep, srv->cfg.cleanup_interval_ms,
                       srv->cfg.cleanup_interval_ms);
    if (sigfd >= 0) {
        srv->sigfd = sigfd;
        rv = uv_poll_init(&srv->loop, &srv->sigpoll, sigfd);
        if (rv < 0)
            goto done;
        srv->sigpoll.data = srv;
        uv_poll_start(&srv->sigpoll, UV_READABLE, on_signal_fd);
    }
    if (closed)
        begin_stop(srv, 1);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    return 0;

done:
    /* Could not start: unwind through the normal stop path. */
    begin_stop(srv, 2);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    return rv;
}

static void
on_connection(uv_stream_t *server, int status)
{
    wc_listener_t *ls = server->data;
    wc_server_t *srv = ls->srv;

    if (status < 0) {
        if (srv->cfg.log_socket_errors)
            wc_server_log(srv, 30, "server accept() threw an exception: %s",
                          uv_strerror(status));
        return;
    }
    if (atomic_load(&srv->stopping))
        return;
    if (srv->nchannels >= srv->cfg.connection_limit) {
        /* Not accepting makes libuv stop polling this listener until
         * uv_accept is called again (wc_server_channel_closed). */
        ls->held = 1;
        if (!srv->limit_logged) {
            srv->limit_logged = 1;
            wc_server_log(srv, 30, "total open connections reached the "
                                   "connection limit, no longer accepting "
                                   "new connections");
        }
        return;
    }
    int rv = wc_channel_accept(srv, server, ls->index);
    if (rv < 0 && rv != UV_ENOTCONN && srv->cfg.log_socket_errors)
        wc_server_log(srv, 30, "server accept() threw an exception: %s",
                      uv_strerror(rv));
}

/* A channel's handle is closed: room under the limit, or the last one of a
 * stopping server. */
void
wc_server_channel_closed(wc_server_t *srv)
{
    if (srv->nchannels < srv->cfg.connection_limit
        && !atomic_load(&srv->stopping)) {
        for (int i = 0; i < srv->nlisteners; i++) {
            wc_listener_t *ls = &srv->listeners[i];
            if (ls->held && srv->nchannels < srv->cfg.connection_limit) {
                ls->held = 0;
                wc_channel_accept(srv, &ls->h.stream, i);
            }
        }
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
    pthread_mutex_unlock(&srv->qlock);

    while (kicks) {
        wc_channel_t *next = kicks->kick_next;
        wc_channel_kicked(kicks);
        kicks = next;
    }
    if (close_req > atomic_load(&srv->stopping))
        begin_stop(srv, close_req >= 2 ? 2 : 1);
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
    /* While workers hold channels, tick every millisecond to send output
     * they held back (a pipelined batch, a fast generator's blocks). */
    if (!srv->tick_on && atomic_load(&srv->nbusy) > 0 && !srv->finished) {
        srv->tick_on = 1;
        uv_timer_start(&srv->tick, on_tick, 1, 1);
    }
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
        wc_channel_t *next = ch->defer_next;
        pthread_mutex_lock(&ch->lock);
        ch->deferred = 0;
        pthread_mutex_unlock(&ch->lock);
        wc_channel_flush(ch);
        wc_channel_unref(ch);
        ch = next;
    }
    if (atomic_load(&srv->nbusy) == 0) {
        pthread_mutex_lock(&srv->qlock);
        int empty = srv->defer_head == NULL;
        pthread_mutex_unlock(&srv->qlock);
        if (empty) {
            uv_timer_stop(&srv->tick);
            srv->tick_on = 0;
        }
    }
}

/* Close connections that have been idle for channel_timeout.  A request
 * being served is never timed out (waitress #267). */
static void
on_sweep(uv_timer_t *t)
{
    wc_server_t *srv = t->data;
    uint64_t now = wc_now_ms();
    uint64_t limit = srv->cfg.channel_timeout_ms;
    wc_channel_t *ch = srv->channels;
    while (ch) {
        wc_channel_t *next = ch->next;
        uint64_t last = atomic_load_explicit(&ch->last_activity,
                                             memory_order_relaxed);
        if (now > last && now - last > limit) {
            pthread_mutex_lock(&ch->lock);
            int idle = !ch->busy && ch->npending == 0;
            pthread_mutex_unlock(&ch->lock);
            if (idle)
                wc_channel_close(ch);
        }
        ch = next;
    }
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
                begin_stop(srv, level);
            }
        }
    }
}

void
wc_server_request_close(wc_server_t *srv)
{
    pthread_mutex_lock(&srv->qlock);
    if (srv->close_requested < 2)
        srv->close_requested++;
    if (srv->running)
        uv_async_send(&srv->async);
    pthread_mutex_unlock(&srv->qlock);
}

static void
begin_stop(wc_server_t *srv, int level)
{
    if (atomic_load(&srv->stopping) >= level)
        return;
    atomic_store(&srv->stopping, level);
    pthread_mutex_lock(&srv->qlock);
    if (srv->close_requested < level)
        srv->close_requested = level;
    pthread_mutex_unlock(&srv->qlock);
    for (int i = 0; i < srv->nlisteners; i++) {
        wc_listener_t *ls = &srv->listeners[i];
        if (ls->open) {
            ls->open = 0;
            uv_close(&ls->h.handle, NULL);
        }
    }
    wc_channel_t *ch = srv->channels;
    while (ch) {
        wc_channel_t *next = ch->next;
        wc_channel_stop(ch, level >= 2);
        ch = next;
    }
    check_exit(srv);
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
    uv_timer_stop(&srv->sweep);
    close_handle((uv_handle_t *)&srv->sweep);
    uv_timer_stop(&srv->tick);
    close_handle((uv_handle_t *)&srv->tick);
    for (wc_channel_t *ch = take_deferred(srv), *next; ch; ch = next) {
        next = ch->defer_next;
        wc_channel_unref(ch);
    }
    close_handle((uv_handle_t *)&srv->wake);
    if (srv->sigfd >= 0) {
        uv_poll_stop(&srv->sigpoll);
        close_handle((uv_handle_t *)&srv->sigpoll);
    }
    if (live == 0)
        close_handle((uv_handle_t *)&srv->async);
    else
        uv_stop(&srv->loop);    /* workers still in the app: leave the
                                   async handle for them */
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
    if (srv->idle_workers > srv->waking) {
        srv->waking++;
        pthread_cond_signal(&srv->qcond);
    }
    pthread_mutex_unlock(&srv->qlock);
}

void
wc_server_destroy(wc_server_t *srv)
{
    /* Handles still open (run() never called, or a hard stop): close them
     * and let the loop finish their callbacks. */
    for (int i = 0; i < srv->nlisteners; i++) {
        if (srv->listeners[i].open) {
            srv->listeners[i].open = 0;
            uv_close(&srv->listeners[i].h.handle, NULL);
        }
    }
    close_handle((uv_handle_t *)&srv->async);
    close_handle((uv_handle_t *)&srv->sweep);
    close_handle((uv_handle_t *)&srv->tick);
    close_handle((uv_handle_t *)&srv->wake);
    uv_run(&srv->loop, UV_RUN_NOWAIT);
    uv_loop_close(&srv->loop);
    wc_logmsg_t *m = srv->log_head;
    while (m) {
        wc_logmsg_t *next = m->next;
        free(m);
        m = next;
    }
    free(srv->listeners);
    pthread_mutex_destroy(&srv->qlock);
    pthread_cond_destroy(&srv->qcond);
}
