/* channel_out.c: the output side of a connection.  The loop's writes
 * (wc_channel_flush: sendmsg while the socket takes it, then a uv_write
 * that libuv finishes on POLLOUT; sendfile for file segments), and the
 * workers' (wc_channel_send: straight to the socket when nothing is queued
 * before it, else into the output queue; output held back for a pipelined
 * batch; parking without the GIL on a full queue; app threads in write()).
 *
 * GIL map: nothing here touches Python but wc_dispatch_retain, which is
 * only called for a sender that passes `owners` and so holds the GIL.
 * wc_channel_flush and on_write run on the loop thread; the rest on
 * workers and app threads, with or without the GIL, and never blocks on
 * the client (MSG_DONTWAIT).
 *
 * Zero copy: what the socket does not take of a large body block is
 * queued as a reference to the app's bytes object, not copied.  When it is
 * written the segment goes to the server's release list (give_back), and
 * a worker drops the reference the next time it holds the GIL.
 */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#define SENDFILE_STEP (1 << 20)
/* Blocks smaller than this are copied: a reference costs a segment and a
 * later release with the GIL, a copy of a few KiB costs less. */
#define ZC_MIN 16384
#define FILE_BLOCK 65536        /* read into memory when the socket is full */

static void on_write(uv_write_t *req, int status);

/* A thread parked on a channel (output over the high watermark, or the
 * worker waiting for app threads still in write()).  Lives on the parked
 * thread's stack, linked into ch->waiters under ch->lock. */
struct wc_waiter_s {
    wc_waiter_t *next;
    pthread_cond_t cond;
};

/* ---- the loop's writes -------------------------------------------------- */

/* A uv_write in flight: allocated only when the socket is full, so an
 * idle connection does not carry one. */
typedef struct {
    uv_write_t req;
    wc_channel_t *ch;
    char *blk;          /* a file block read for it, or NULL */
} wreq_t;

static int
start_write(wc_channel_t *ch, uv_buf_t *bufs, unsigned n, char *blk)
{
    wreq_t *wr = malloc(sizeof(*wr));
    if (wr == NULL)
        return UV_ENOMEM;
    wr->ch = ch;
    wr->blk = blk;
    int rv = uv_write(&wr->req, &ch->h.stream, bufs, n, on_write);
    if (rv < 0)
        free(wr);
    else
        ch->writing = 1;
    return rv;
}

/* ch->lock held: the client took bytes, or output began to wait in an
 * empty queue, now.  A stall is timed from here (wc_channel_sweep); reads
 * never move this clock. */
static void
stamp(wc_channel_t *ch)
{
    atomic_store_explicit(&ch->out_at, wc_now_ms(), memory_order_relaxed);
}

/* ch->lock held (or the channel is being freed): hand the queue's done
 * reference segments to the server, for a worker to release. */
void
wc_channel_give_back(wc_channel_t *ch)
{
    wc_seg_t *dead = ch->out.dead;
    if (dead == NULL)
        return;
    ch->out.dead = NULL;
    wc_seg_t *last = dead;
    uint64_t bytes = last->len;
    while (last->next) {
        last = last->next;
        bytes += last->len;
    }
    wc_server_t *srv = ch->srv;
    pthread_mutex_lock(&srv->qlock);
    last->next = srv->release_head;
    srv->release_head = dead;
    srv->release_bytes += bytes;
    pthread_mutex_unlock(&srv->qlock);
}

/* Write what the queue holds: synchronously while the socket takes it,
 * then through uv_write, which waits for POLLOUT.  File segments go out
 * with sendfile(2); when the socket is full, or the file cannot be
 * sendfile'd (EINVAL, ENOSYS: some file systems), the next block is read
 * into memory and queued as a uv_write instead. */
void
wc_channel_flush(wc_channel_t *ch)
{
    struct iovec iov[WC_IOV_MAX];
    uv_buf_t bufs[WC_IOV_MAX];

    if (ch->state == WC_CONN_CLOSED)
        return;
    pthread_mutex_lock(&ch->lock);
    while (!ch->writing && !ch->broken && ch->out.head) {
        size_t total;
        int n = wc_outq_iov(&ch->out, iov, WC_IOV_MAX, &total);
        if (n == 0 && ch->out.head && ch->out.head->fd >= 0) {
            wc_seg_t *s = ch->out.head;
            size_t left = s->len - s->off;
            off_t off = s->file_off;
            size_t step = left < SENDFILE_STEP ? left : SENDFILE_STEP;
            if (step == 0) {
                wc_outq_consume(&ch->out, 0);
                continue;
            }
            if (!s->no_sendfile) {
                ssize_t w = sendfile(ch->fd, s->fd, &off, step);
                if (w > 0) {
                    wc_outq_consume(&ch->out, (size_t)w);
                    stamp(ch);
                    continue;
                }
                if (w == 0) {
                    /* The file is shorter than promised: cut it off. */
                    ch->broken = 1;
                    break;
                }
                if (errno == EINTR)
                    continue;
                if (errno == EINVAL || errno == ENOSYS
                    || errno == EOPNOTSUPP)
                    s->no_sendfile = 1;
                else if (errno != EAGAIN) {
                    ch->broken = 1;
                    break;
                }
            }
            /* Queue the next block from memory. */
            char *blk = malloc(FILE_BLOCK);
            if (blk == NULL) {
                ch->broken = 1;
                break;
            }
            size_t want = left < FILE_BLOCK ? left : FILE_BLOCK;
            ssize_t r = pread(s->fd, blk, want, s->file_off);
            if (r <= 0) {
                free(blk);
                ch->broken = 1;
                break;
            }
            /* The block is written from blk; the segment advances when
             * the write completes (on_write consumes wlen). */
            ch->wlen = (size_t)r;
            bufs[0] = uv_buf_init(blk, (unsigned)r);
            if (start_write(ch, bufs, 1, blk) < 0) {
                free(blk);
                ch->broken = 1;
            }
            break;
        }
        if (n == 0)
            break;
        struct msghdr mh = {0};
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)n;
        ssize_t w = sendmsg(ch->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) {
                ch->broken = 1;
                break;
            }
            w = 0;
        }
        wc_outq_consume(&ch->out, (size_t)w);
        if (w > 0)
            stamp(ch);
        if ((size_t)w == total)
            continue;
        /* The socket is full: let libuv wait for POLLOUT. */
        n = wc_outq_iov(&ch->out, iov, WC_IOV_MAX, &total);
        for (int i = 0; i < n; i++)
            bufs[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
        ch->wlen = total;
        if (start_write(ch, bufs, (unsigned)n, NULL) < 0)
            ch->broken = 1;
        break;
    }
    if (ch->waiters && (ch->broken || ch->out.bytes
                        <= ch->srv->cfg.outbuf_high_watermark))
        wc_channel_wake_waiters(ch);
    wc_channel_give_back(ch);
    pthread_mutex_unlock(&ch->lock);
    wc_channel_maybe_close(ch);
}

static void
on_write(uv_write_t *req, int status)
{
    wreq_t *wr = WC_CONTAINER_OF(req, wreq_t, req);
    wc_channel_t *ch = wr->ch;
    free(wr->blk);
    free(wr);
    pthread_mutex_lock(&ch->lock);
    ch->writing = 0;
    if (status < 0) {
        ch->broken = 1;
    } else {
        wc_outq_consume(&ch->out, ch->wlen);
        stamp(ch);
    }
    ch->wlen = 0;
    wc_channel_give_back(ch);
    pthread_mutex_unlock(&ch->lock);
    if (status == UV_ECANCELED)
        return;   /* closing */
    wc_channel_flush(ch);
}

/* ---- parking ----------------------------------------------------------- */

/* ch->lock held. */
void
wc_channel_wake_waiters(wc_channel_t *ch)
{
    for (wc_waiter_t *w = ch->waiters; w; w = w->next)
        pthread_cond_signal(&w->cond);
}

/* ch->lock held.  Park the calling thread (no GIL) until it is woken. */
static void
park(wc_channel_t *ch, wc_waiter_t *me)
{
    me->next = ch->waiters;
    ch->waiters = me;
    pthread_cond_wait(&me->cond, &ch->lock);
    wc_waiter_t **pp = &ch->waiters;
    while (*pp != me)
        pp = &(*pp)->next;
    *pp = me->next;
}

/* ---- the workers' writes --------------------------------------------------
 * Called by workers and app threads, GIL held or not.  ch->lock serializes
 * them with the loop's writes and close. */

/* Send the iovecs: straight to the socket when nothing the loop must send
 * comes before them (bytes a worker queued itself go along in the same
 * sendmsg), the rest into the output queue for the loop: copied, or, for
 * an iovec of at least ZC_MIN bytes whose `owners` entry is an object
 * (a bytes object; the caller holds the GIL), by reference.  With
 * `defer` (more pipelined responses follow) small output is only queued,
 * so a pipelined batch leaves in one sendmsg.  Returns 0; 1 when more than
 * outbuf_high_watermark bytes now wait (the caller should park in
 * wc_channel_wait_drained); UV_EPIPE when the client is gone. */
int
wc_channel_send(wc_channel_t *ch, struct iovec *iov, void **owners, int n,
                int defer)
{
    pthread_mutex_lock(&ch->lock);
    int rv = wc_channel_send_locked(ch, iov, owners, n, defer);
    if (rv == 0 && ch->out.bytes > ch->srv->cfg.outbuf_high_watermark)
        rv = 1;
    pthread_mutex_unlock(&ch->lock);
    return rv;
}

#define DEFER_MAX 65536

static int
queue_iov(wc_channel_t *ch, struct iovec *iov, void **owners, int n)
{
    size_t overflow = ch->srv->cfg.outbuf_overflow;
    if (ch->out.bytes == 0)
        stamp(ch);      /* a stall is timed from here */
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        void *obj = owners ? owners[i] : NULL;
        int r;
        if (ch->out.mem + len > overflow && len > 0) {
            r = wc_outq_spill(&ch->out, ch->srv->cfg.tmpdir,
                              iov[i].iov_base, len);
        } else if (obj != NULL && len >= ZC_MIN) {
            r = wc_outq_append_ref(&ch->out, iov[i].iov_base, len, obj);
            if (r == 0)
                wc_dispatch_retain(obj);
        } else {
            r = wc_outq_append(&ch->out, iov[i].iov_base, len);
        }
        if (r < 0) {
            ch->broken = 1;
            return r;
        }
    }
    return 0;
}

/* The same, with ch->lock held by the caller.  n == 0 flushes what the
 * worker queued. */
int
wc_channel_send_locked(wc_channel_t *ch, struct iovec *iov, void **owners,
                       int n, int defer)
{
    struct iovec all[WC_IOV_MAX * 2];
    size_t qtotal = 0, total = 0;
    int k = 0, rv;

    if (ch->broken)
        return UV_EPIPE;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (defer && !ch->writing && ch->out.mem + total < DEFER_MAX
        && ch->out.bytes == ch->out.mem) {
        /* Held back for the next write of this worker; the loop's tick
         * sends it within a millisecond if that write is slow to come
         * (PEP 3333: transmission goes on while the app makes the next
         * block). */
        rv = queue_iov(ch, iov, owners, n);
        if (rv == 0 && !ch->deferred) {
            wc_server_t *srv = ch->srv;
            ch->deferred = 1;
            atomic_fetch_add(&ch->refs, 1);
            pthread_mutex_lock(&srv->qlock);
            ch->defer_next = srv->defer_head;
            srv->defer_head = ch;
            /* The tick is off (nothing was held back): wake the loop so
             * that it starts it. */
            if (!srv->tick_on && srv->async_live)
                uv_async_send(&srv->async);
            pthread_mutex_unlock(&srv->qlock);
        }
        return rv;
    }
    if (!ch->writing && ch->out.head) {
        /* Queued bytes go first; only memory ones, all of them. */
        k = wc_outq_iov(&ch->out, all, WC_IOV_MAX, &qtotal);
        if (qtotal != ch->out.bytes)
            goto queue_rest;    /* a file or more than fits: the loop's */
    }
    if (ch->writing)
        goto queue_rest;
    if (n > 0)
        memcpy(all + k, iov, (size_t)n * sizeof(*iov));
    if (k + n == 0)
        return 0;
    struct msghdr mh = {0};
    mh.msg_iov = all;
    mh.msg_iovlen = (size_t)(k + n);
    ssize_t w;
    do {
        w = sendmsg(ch->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (w < 0 && errno == EINTR);
    if (w < 0) {
        if (errno != EAGAIN) {
            ch->broken = 1;
            wc_channel_kick(ch);
            return UV_EPIPE;
        }
        w = 0;
    }
    if (w > 0)
        stamp(ch);
    size_t left = (size_t)w;
    size_t from_q = left < qtotal ? left : qtotal;
    if (from_q) {
        wc_outq_consume(&ch->out, from_q);
        wc_channel_give_back(ch);
    }
    left -= from_q;
    int i = 0;
    while (i < n && left >= iov[i].iov_len) {
        left -= iov[i].iov_len;
        i++;
    }
    if (i < n) {
        iov[i].iov_base = (char *)iov[i].iov_base + left;
        iov[i].iov_len -= left;
    }
    iov += i;
    if (owners)
        owners += i;
    n -= i;
    if (n == 0 && ch->out.head == NULL)
        return 0;
queue_rest:
    rv = queue_iov(ch, iov, owners, n);
    wc_channel_kick(ch);
    return rv;
}

/* Queue `n` bytes of `fd` from `off` for sendfile by the loop.  The fd is
 * closed when sent if close_fd. */
int
wc_channel_send_file(wc_channel_t *ch, int fd, off_t off, uint64_t n,
                     int close_fd)
{
    int rv = 0;
    pthread_mutex_lock(&ch->lock);
    if (ch->broken)
        rv = UV_EPIPE;
    else if ((rv = wc_outq_append_file(&ch->out, fd, off, n, close_fd)) == 0)
        wc_channel_kick(ch);
    pthread_mutex_unlock(&ch->lock);
    if (rv < 0 && close_fd)
        close(fd);
    return rv;
}

/* Block (the caller has released the GIL) while the output queue is over
 * the high watermark.  Returns 0, or UV_EPIPE when the client is gone. */
int
wc_channel_wait_drained(wc_channel_t *ch)
{
    int rv = 0;
    uint64_t hwm = ch->srv->cfg.outbuf_high_watermark;
    wc_waiter_t me;
    pthread_cond_init(&me.cond, NULL);
    pthread_mutex_lock(&ch->lock);
    while (!ch->broken && ch->out.bytes > hwm)
        park(ch, &me);
    if (ch->broken)
        rv = UV_EPIPE;
    pthread_mutex_unlock(&ch->lock);
    pthread_cond_destroy(&me.cond);
    return rv;
}

/* App threads inside write() for the running request.  The worker waits
 * for them to leave before it finishes the response (their bytes come
 * before the last chunk) and releases the request they point into.
 * Enter and leave are called with the GIL held; wait_writers without. */
void
wc_channel_writer_enter(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    ch->writers++;
    pthread_mutex_unlock(&ch->lock);
}

void
wc_channel_writer_leave(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    if (--ch->writers == 0)
        wc_channel_wake_waiters(ch);
    pthread_mutex_unlock(&ch->lock);
}

int
wc_channel_has_writers(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    int n = ch->writers;
    pthread_mutex_unlock(&ch->lock);
    return n > 0;
}

void
wc_channel_wait_writers(wc_channel_t *ch)
{
    wc_waiter_t me;
    pthread_cond_init(&me.cond, NULL);
    pthread_mutex_lock(&ch->lock);
    while (ch->writers > 0)
        park(ch, &me);
    pthread_mutex_unlock(&ch->lock);
    pthread_cond_destroy(&me.cond);
}

int
wc_channel_disconnected(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->lock);
    int gone = ch->broken
               || (ch->peer_eof && ch->srv->cfg.lookahead > 0);
    pthread_mutex_unlock(&ch->lock);
    return gone;
}

