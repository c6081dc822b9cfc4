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
 * Each worker thread also keeps a record (a slot) of the request it has
 * in the application, since when, with its method and path, so that the
 * hung-request check (Server.busy_requests, waitress_c/watchdog.py) can
 * name stuck requests without a lock or a Python call on the hot path:
 * the worker publishes the record with a sequence counter (a seqlock of
 * relaxed atomic words), the reader copies it and keeps the copy only if
 * the counter did not move meanwhile.
 *
 * GIL map: wc_dispatch_push runs on the loop thread, no GIL.  The worker
 * main loop runs on a Python thread with its own thread state for life: it
 * holds the GIL only while it serves tasks, and drains every queued task
 * before it lets the GIL go.  The log thread likewise holds the GIL only
 * while it emits.  qlock and b->lock are leaf locks: no holder
 * ever waits for the GIL, so taking them with the GIL held cannot deadlock.
 */
#include "wc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 16
/* Sent reference segments wake an idle worker to release them once they
 * hold this much; less waits for a worker's next task or the sweep. */
#define RELEASE_WAKE (4u << 20)

/* Bytes of the method and of the path a record keeps (multiples of 8);
 * a longer path is cut, which is enough to recognise it in a log. */
#define SLOT_METHOD 16
#define SLOT_PATH 200

/* One worker thread's record.  Written by that worker only (slot_enter,
 * slot_leave); read by any thread holding the GIL (busy_requests).  Every
 * field is atomic, so a torn read is a discarded copy, never undefined
 * behaviour; its own cache line, so a worker's stores do not slow the
 * others.  `seq` is odd while the worker rewrites the record. */
struct wc_slot_s {
    atomic_uint seq;
    _Atomic uint64_t since;     /* slot_clock() the request began; 0: none */
    _Atomic uint64_t lens;      /* method length | path length << 32 */
    _Atomic uint64_t method[SLOT_METHOD / 8];
    _Atomic uint64_t path[SLOT_PATH / 8];
} __attribute__((aligned(64)));

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

/* ---- the worker threads' records -------------------------------------- */

int
wc_dispatch_slots_init(wc_server_t *srv)
{
    int n = srv->cfg.threads > 0 ? srv->cfg.threads : 1;
    void *p = NULL;
    if (posix_memalign(&p, 64, (size_t)n * sizeof(wc_slot_t)) != 0)
        return -ENOMEM;
    wc_slot_t *slots = p;
    for (int i = 0; i < n; i++) {
        atomic_init(&slots[i].seq, 0);
        atomic_init(&slots[i].since, 0);
        atomic_init(&slots[i].lens, 0);
        for (int k = 0; k < SLOT_METHOD / 8; k++)
            atomic_init(&slots[i].method[k], 0);
        for (int k = 0; k < SLOT_PATH / 8; k++)
            atomic_init(&slots[i].path[k], 0);
    }
    srv->slots = slots;
    srv->nslots = n;
    return 0;
}

void
wc_dispatch_slots_free(wc_server_t *srv)
{
    free(srv->slots);
    srv->slots = NULL;
    srv->nslots = 0;
}

/* The records' clock, in ns: the coarse monotonic clock, a read of the
 * kernel's last tick (a few ms of resolution, ample for timeouts of a
 * second or more) that costs half of CLOCK_MONOTONIC's 17 ns here. */
static uint64_t
slot_clock(void)
{
#ifdef CLOCK_MONOTONIC_COARSE
    clockid_t id = CLOCK_MONOTONIC_COARSE;
#else
    clockid_t id = CLOCK_MONOTONIC;
#endif
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Store n bytes of p (n <= 8 * words) as relaxed atomic words. */
static void
put_words(_Atomic uint64_t *dst, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = 0;
        memcpy(&v, p + i, n - i < 8 ? n - i : 8);
        atomic_store_explicit(&dst[i / 8], v, memory_order_relaxed);
    }
}

static void
get_words(char *out, _Atomic uint64_t *src, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = atomic_load_explicit(&src[i / 8], memory_order_relaxed);
        memcpy(out + i, &v, n - i < 8 ? n - i : 8);
    }
}

/* The worker, before it hands req to the app: a coarse clock read and a
 * few word stores (15 ns in all here), no lock, no fence but a compiler
 * barrier on x86. */
static void
slot_enter(wc_slot_t *s, const wc_request_t *req)
{
    unsigned seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    size_t ml = req->method ? req->method_len : 0;
    size_t pl = req->path ? req->path_len : 0;
    if (ml > SLOT_METHOD)
        ml = SLOT_METHOD;
    if (pl > SLOT_PATH)
        pl = SLOT_PATH;
    atomic_store_explicit(&s->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    put_words(s->method, req->method, ml);
    put_words(s->path, req->path, pl);
    atomic_store_explicit(&s->lens, (uint64_t)ml | (uint64_t)pl << 32,
                          memory_order_relaxed);
    /* 0 means idle: a clock at 0 would hide the request, not harm. */
    atomic_store_explicit(&s->since, slot_clock(), memory_order_relaxed);
    atomic_store_explicit(&s->seq, seq + 2, memory_order_release);
}

/* The request is done: the record says "not in the app".  A reader that
 * copied it just before reports a request that has just ended, once. */
static void
slot_leave(wc_slot_t *s)
{
    atomic_store_explicit(&s->since, 0, memory_order_relaxed);
}

/* A consistent copy of a record whose request began at least min_ns ago:
 * 1, or 0 (idle, younger, or being rewritten: not stuck). */
static int
slot_read(wc_slot_t *s, uint64_t now, uint64_t min_ns, uint64_t *age,
          unsigned *seq, char *method, size_t *ml, char *path, size_t *pl)
{
    unsigned s1 = atomic_load_explicit(&s->seq, memory_order_acquire);
    if (s1 & 1)
        return 0;
    uint64_t since = atomic_load_explicit(&s->since, memory_order_relaxed);
    if (since == 0 || since > now || now - since < min_ns)
        return 0;
    uint64_t lens = atomic_load_explicit(&s->lens, memory_order_relaxed);
    *ml = (size_t)(lens & 0xffffffffu);
    *pl = (size_t)(lens >> 32);
    if (*ml > SLOT_METHOD || *pl > SLOT_PATH)
        return 0;
    get_words(method, s->method, *ml);
    get_words(path, s->path, *pl);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->seq, memory_order_relaxed) != s1)
        return 0;
    *age = now - since;
    *seq = s1;
    return 1;
}

/* GIL held (it builds the answer), no lock: the records are read as they
 * are.  New reference. */
PyObject *
wc_dispatch_busy_requests(PyObject *server, PyObject *arg)
{
    wc_server_t *srv = ((ServerObject *)server)->srv;
    double older = PyFloat_AsDouble(arg);
    if (older == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(older >= 0.0 && older < 1e9)) {
        PyErr_SetString(PyExc_ValueError, "older_than must be a number of "
                        "seconds >= 0");
        return NULL;
    }
    uint64_t min_ns = (uint64_t)(older * 1e9);
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    uint64_t now = slot_clock();
    for (int i = 0; i < srv->nslots; i++) {
        char method[SLOT_METHOD], path[SLOT_PATH];
        size_t ml, pl;
        uint64_t age;
        unsigned seq;
        if (!slot_read(&srv->slots[i], now, min_ns, &age, &seq, method, &ml,
                       path, &pl))
            continue;
        /* key: this request among all (a record's counter moves by 2 a
         * request). */
        unsigned long long key = (unsigned long long)seq / 2
                                 * (unsigned long long)srv->nslots
                                 + (unsigned long long)i;
        PyObject *m = PyUnicode_DecodeLatin1(method, (Py_ssize_t)ml, NULL);
        PyObject *p = PyUnicode_DecodeLatin1(path, (Py_ssize_t)pl, NULL);
        PyObject *item = NULL;
        if (m && p)
            item = Py_BuildValue("(OOdK)", m, p, (double)age / 1e9, key);
        Py_XDECREF(m);
        Py_XDECREF(p);
        int rv = item ? PyList_Append(list, item) : -1;
        Py_XDECREF(item);
        if (rv < 0)
            goto error;
    }
    PyObject *answer = Py_BuildValue("(iO)", srv->nslots, list);
    Py_DECREF(list);
    return answer;

error:
    Py_DECREF(list);
    return NULL;
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
            if (w->slot)
                slot_enter(w->slot, req);
            wc_wsgi_serve(w, ch, req, &close);
            if (w->slot)
                slot_leave(w->slot);
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
    srv->log_running = 1;
    for (;;) {
        while (srv->log_head == NULL && !srv->depth_due && !srv->log_stop)
            pthread_cond_wait(&srv->log_cond, &srv->qlock);
        int depth;
        wc_logmsg_t *m = take_logs(srv, &depth);
        if (m == NULL && depth == 0 && srv->log_stop) {
            srv->log_running = 0;
            break;
        }
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
    if (srv->workers_started < srv->nslots)
        w.slot = &srv->slots[srv->workers_started];
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
