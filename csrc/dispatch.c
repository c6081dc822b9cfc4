/* dispatch.c: the task queue and the worker pool.
 *
 * A task is a channel with at least one complete request.  The loop pushes
 * it (lock, append, signal a parked worker, unlock); a worker takes it and
 * serves that channel's requests strictly in order, then goes idle or
 * re-queues the channel at the tail so one pipelining client cannot starve
 * the others.
 *
 * The loop's log lines go to a log thread of their own, so that they are
 * emitted even while every worker is stuck in the application.
 *
 * GIL map: wc_dispatch_push runs on the loop thread, no GIL.  The worker
 * main loop runs on a Python thread with its own thread state for life: it
 * holds the GIL only while it serves tasks, and drains every queued task
 * before it lets the GIL go.  The log thread likewise holds the GIL only
 * while it emits.  qlock and b->lock are leaf locks: no holder
 * ever waits for the GIL, so taking them with the GIL held cannot deadlock.
 */
#include "wc.h"

#include <string.h>

#define BATCH 16
/* Sent reference segments wake an idle worker to release them once they
 * hold this much; less waits for a worker's next task or the sweep. */
#define RELEASE_WAKE (4u << 20)

static void wake_one(wc_server_t *srv);

void
wc_dispatch_push(wc_server_t *srv, wc_channel_t *ch)
{
    pthread_mutex_lock(&srv->qlock);
    ch->b->task_next = NULL;
    if (srv->task_tail)
        srv->task_tail->b->task_next = ch;
    else
        srv->task_head = ch;
    srv->task_tail = ch;
    srv->ntasks++;
    wc_m_set(srv->m, WC_M_QUEUE, (uint64_t)srv->ntasks);
    if (srv->ntasks > srv->idle_workers) {
        /* Every worker is busy (or about to be): this task waits. */
        if (srv->ntasks > srv->depth_warn)
            srv->depth_warn = srv->ntasks;
        if ((uint64_t)srv->ntasks > atomic_load_explicit(
                &srv->m[WC_M_QUEUE_MAX], memory_order_relaxed))
            wc_m_set(srv->m, WC_M_QUEUE_MAX, (uint64_t)srv->ntasks);
    }
    pthread_mutex_unlock(&srv->qlock);
    /* No wake-up here: the loop wakes a worker once it has queued every
     * request of this iteration (wc_dispatch_wake), so one worker wake-up
     * (one context switch on a shared core) serves a whole batch. */
}

/* Loop thread, once per iteration before it blocks: if tasks wait, wake
 * one parked worker (one wake-up for every request read in the iteration).
 * Taking a task does not wake another worker: for CPU-bound work that only
 * makes them fight over the GIL (0.083 against 0.066 context switches a
 * request at 100 connections); wc_dispatch_tick brings in more workers
 * when the serving ones are blocked. */
void
wc_dispatch_wake(wc_server_t *srv)
{
    pthread_mutex_lock(&srv->qlock);
    if ((srv->task_head || srv->release_bytes >= RELEASE_WAKE)
        && srv->idle_workers > srv->waking)
        wake_one(srv);
    pthread_mutex_unlock(&srv->qlock);
}

/* Loop thread, once a second: sent bodies wait at most that long for
 * their release when no request comes. */
void
wc_dispatch_sweep(wc_server_t *srv)
{
    pthread_mutex_lock(&srv->qlock);
    if (srv->release_head && srv->idle_workers > srv->waking)
        wake_one(srv);
    pthread_mutex_unlock(&srv->qlock);
}

/* GIL held (the sender passed owners). */
void
wc_dispatch_retain(void *obj)
{
    Py_INCREF((PyObject *)obj);
}

/* qlock held. */
static wc_seg_t *
take_release(wc_server_t *srv)
{
    wc_seg_t *list = srv->release_head;
    srv->release_head = NULL;
    srv->release_bytes = 0;
    return list;
}

/* GIL held, no lock: drop the segments' references.  They are exact
 * bytes objects (response.c passes no other), so no Python code runs. */
static void
release(wc_seg_t *s)
{
    while (s) {
        wc_seg_t *next = s->next;
        Py_DECREF((PyObject *)s->obj);
        free(s);
        s = next;
    }
}

void
wc_dispatch_release_all(wc_server_t *srv, int lock)
{
    if (lock)
        pthread_mutex_lock(&srv->qlock);
    wc_seg_t *list = take_release(srv);
    if (lock)
        pthread_mutex_unlock(&srv->qlock);
    release(list);
}

/* qlock held.  Does the loop need its millisecond tick?  Only while output
 * is held back, or tasks wait while a worker is idle (wc_dispatch_tick may
 * have to wake it).  Parked requests (a long poll, a slow app with every
 * worker busy) need no tick: the tick is off and costs nothing.  The loop
 * sets and clears srv->tick_on under qlock, so a worker that holds output
 * back while the tick is off knows to wake the loop. */
int
wc_dispatch_want_tick(wc_server_t *srv)
{
    return srv->defer_head != NULL
           || (srv->task_head && srv->idle_workers > srv->waking);
}

/* Loop thread, every millisecond while the tick runs: tasks waiting
 * while no task was taken since the last tick means the serving workers
 * are blocked in the app (I/O, sleep) or in a long computation: wake
 * another, up to the whole pool.  A long queue that is being drained is
 * not a reason: more workers would only fight over the GIL. */
void
wc_dispatch_tick(wc_server_t *srv)
{
    pthread_mutex_lock(&srv->qlock);
    if (srv->task_head && srv->pops == srv->pops_seen
        && srv->idle_workers > srv->waking)
        wake_one(srv);
    srv->pops_seen = srv->pops;
    pthread_mutex_unlock(&srv->qlock);
}

/* qlock held.  `waking` counts signalled workers that have not run yet,
 * so one batch does not wake the whole pool. */
static void
wake_one(wc_server_t *srv)
{
    srv->waking++;
    pthread_cond_signal(&srv->qcond);
}

/* qlock held. */
static wc_channel_t *
pop_task(wc_server_t *srv)
{
    wc_channel_t *ch = srv->task_head;
    if (ch) {
        srv->task_head = ch->b->task_next;
        if (srv->task_head == NULL)
            srv->task_tail = NULL;
        srv->ntasks--;
        wc_m_set(srv->m, WC_M_QUEUE, (uint64_t)srv->ntasks);
        srv->pops++;
    }
    return ch;
}

/* qlock held.  Take the queued log lines, and the largest queue depth
 * seen when the loop's once-a-second sweep asks for it to be reported
 * (waitress's warning on every task is noise). */
static wc_logmsg_t *
take_logs(wc_server_t *srv, int *depth)
{
    wc_logmsg_t *m = srv->log_head;
    srv->log_head = srv->log_tail = NULL;
    *depth = 0;
    if (srv->depth_due) {
        *depth = srv->depth_warn;
        srv->depth_warn = 0;
        srv->depth_due = 0;
    }
    return m;
}

/* GIL held.  Emit the loop's log lines on the waitress_c loggers. */
static void
emit_logs(ServerObject *so, wc_logmsg_t *m, int depth)
{
    while (m) {
        wc_logmsg_t *next = m->next;
        PyObject *r = PyObject_CallMethod(so->logger, "log", "is", m->level,
                                          m->text);
        if (r == NULL)
            PyErr_WriteUnraisable(so->logger);
        Py_XDECREF(r);
        free(m);
        m = next;
    }
    if (depth) {
        /* One line that says what to do: waitress's bare "Task queue
         * depth is N" is its most-asked question. */
        PyObject *r = PyObject_CallMethod(
            so->qlogger, "warning", "siii",
            "Task queue depth is %d: all %d threads were busy and %d "
            "requests waited; raise --threads if the app waits on I/O, or "
            "add --workers if it is CPU-bound (see the metric "
            "waitress_c_task_queue_depth)",
            depth, so->srv->cfg.threads, depth);
        if (r == NULL)
            PyErr_WriteUnraisable(so->qlogger);
        Py_XDECREF(r);
    }
}

void
wc_dispatch_drain_logs(wc_server_t *srv, PyObject *logger, PyObject *qlogger)
{
    int depth;
    pthread_mutex_lock(&srv->qlock);
    wc_logmsg_t *m = take_logs(srv, &depth);
    pthread_mutex_unlock(&srv->qlock);
    emit_logs((ServerObject *)srv->owner, m, depth);
}

/* GIL held.  Serve a channel's queued requests in order, at most BATCH
 * of them before the channel goes to the back of the queue.  The channel
 * decides what each step means for the connection (channel.c). */
static void
serve_channel(wc_worker_t *w, wc_channel_t *ch)
{
    for (int i = 0; i < BATCH; i++) {
        wc_request_t *req = wc_channel_take(ch, &w->more);
        if (req == NULL) {
            wc_channel_unref(ch);
            return;
        }
        int close = 0;
        if (req->error_status) {
            uint64_t n = wc_response_error(w, ch,
                                           req->version ? req->version : 10,
                                           req->error_status,
                                           req->error_detail,
                                           strlen(req->error_detail));
            if (((ServerObject *)w->server)->access_log)
                wc_wsgi_log_error(w, ch, req, req->error_status, n);
            close = 1;
            wc_metrics_request(ch->srv->m, req, req->error_status);
        } else {
            wc_wsgi_serve(w, ch, req, &close);
        }
        wc_request_free(req);
        if (close) {
            wc_channel_end(ch);
            wc_channel_unref(ch);
            return;
        }
    }
    wc_channel_yield(ch);
}

/* The log thread: waits (no GIL) for the loop's log lines and emits them
 * (GIL held), until the loop has returned and nothing is left. */
PyObject *
wc_dispatch_log_main(PyObject *server)
{
    ServerObject *so = (ServerObject *)server;
    wc_server_t *srv = so->srv;
    PyThreadState *ts = PyEval_SaveThread();
    pthread_mutex_lock(&srv->qlock);
    for (;;) {
        while (srv->log_head == NULL && !srv->depth_due && !srv->log_stop)
            pthread_cond_wait(&srv->log_cond, &srv->qlock);
        int depth;
        wc_logmsg_t *m = take_logs(srv, &depth);
        if (m == NULL && depth == 0 && srv->log_stop)
            break;
        pthread_mutex_unlock(&srv->qlock);
        if (m || depth) {
            PyEval_RestoreThread(ts);
            emit_logs(so, m, depth);
            ts = PyEval_SaveThread();
        }
        pthread_mutex_lock(&srv->qlock);
    }
    pthread_mutex_unlock(&srv->qlock);
    PyEval_RestoreThread(ts);
    Py_RETURN_NONE;
}

PyObject *
wc_dispatch_worker_main(PyObject *server)
{
    ServerObject *so = (ServerObject *)server;
    wc_server_t *srv = so->srv;
    wc_worker_t w;
    memset(&w, 0, sizeof(w));
    w.server = server;

    PyThreadState *ts = PyEval_SaveThread();
    wc_thread_batch(NULL, NULL);    /* the thread ends with the server */
    pthread_mutex_lock(&srv->qlock);
    srv->workers_started++;
    for (;;) {
        while (srv->task_head == NULL && srv->release_head == NULL
               && !srv->workers_stop) {
            srv->idle_workers++;
            pthread_cond_wait(&srv->qcond, &srv->qlock);
            srv->idle_workers--;
            if (srv->waking > 0)
                srv->waking--;
        }
        wc_seg_t *dead = take_release(srv);
        wc_channel_t *ch = pop_task(srv);
        if (ch == NULL && dead == NULL)
            break;      /* workers_stop and nothing left */
        pthread_mutex_unlock(&srv->qlock);

        PyEval_RestoreThread(ts);
        release(dead);
        int serving = ch != NULL;
        if (serving)
            wc_m_gil_add(srv->m, WC_M_BUSY, 1);
        while (ch) {
            serve_channel(&w, ch);
            /* Next task without letting the GIL go, unless the queue lock
             * is busy: then release the GIL before blocking on it. */
            if (pthread_mutex_trylock(&srv->qlock) != 0)
                break;
            dead = take_release(srv);
            ch = pop_task(srv);
            pthread_mutex_unlock(&srv->qlock);
            release(dead);
        }
        if (serving)
            wc_m_gil_add(srv->m, WC_M_BUSY, -1);
        ts = PyEval_SaveThread();
        pthread_mutex_lock(&srv->qlock);
    }
    srv->live_workers--;
    if (srv->live_workers == 0 && srv->running && srv->async_live)
        uv_async_send(&srv->async);     /* the loop waits for this */
    pthread_mutex_unlock(&srv->qlock);
    PyEval_RestoreThread(ts);
    wc_wsgi_worker_done(&w);
    wc_buf_free(&w.out);
    Py_RETURN_NONE;
}
