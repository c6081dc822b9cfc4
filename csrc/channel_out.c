/* channel_out.c: the output side of a connection.  The loop's writes
 * (wc_channel_flush: sendmsg and sendfile while the socket takes them,
 * then POLLOUT and again), and the workers' (wc_channel_send: straight to
 * the socket when nothing is queued before it, else into the output
 * queue; output held back for a pipelined batch; parking without the GIL
 * on a full queue; app threads in write()).  Every field here is the
 * busy part's (ch->b), under b->lock.
 *
 * GIL map: nothing here touches Python but wc_dispatch_retain, which is
 * only called for a sender that passes `owners` and so holds the GIL.
 * wc_channel_flush runs on the loop thread; the rest on workers and app
 * threads, with or without the GIL, and never blocks on the client
 * (MSG_DONTWAIT).
 *
 * Zero copy: what the socket does not take of a large body block is
 * queued as a reference to the app's bytes object, not copied.  When it is
 * written the segment goes to the server's release list (give_back), and
 * a worker drops the reference the next time it holds the GIL.
 *
 * TLS (tls.c): the loop writes with wc_tls_writev, and files are read and
 * written from memory (no sendfile: the bytes must be encrypted).  A
 * worker writes a small response itself, as one record
 * (wc_channel_send_locked), under b->lock, which the loop also holds
 * around everything it does with that SSL object (an SSL object must not
 * be used by two threads at once); larger output is queued for the loop.
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
/* A file sendfile refuses is read into memory this much at a time. */
#define FILE_BLOCK 65536

/* A thread parked on a channel (output over the high watermark, or the
 * worker waiting for app threads still in write()).  Lives on the parked
 * thread's stack, linked into b->waiters under b->lock. */
struct wc_waiter_s {
    wc_waiter_t *next;
    pthread_cond_t cond;
};

/* ---- the loop's writes -------------------------------------------------- */

/* How many queued bytes make a writer park (wc_channel_send,
 * wc_channel_wait_drained).  outbuf_high_watermark; on TLS at most half
 * of outbuf_overflow: every byte goes through the queue there, and a
 * worker that writes faster than the loop encrypts would otherwise spill
 * most of a large response to the temp file (200 MiB over TLS: 155 MiB
 * written to it and read back). */
static uint64_t
park_mark(const wc_channel_t *ch)
{
    const wc_config_t *cfg = &ch->srv->cfg;
    uint64_t mark = cfg->outbuf_high_watermark;
    /* An HTTP/2 stream too: a connection has up to
     * h2_max_concurrent_streams of them, each with its own queue. */
    if ((ch->secure || ch->kind == WC_KIND_STREAM)
        && cfg->outbuf_overflow / 2 < mark)
        mark = cfg->outbuf_overflow / 2 ? cfg->outbuf_overflow / 2 : 1;
    return mark;
}

/* b->lock held (the loop, or a worker): write to the socket, or through
 * TLS.  Returns the bytes taken, or -errno (-EAGAIN: none). */
static ssize_t
out_write(wc_channel_t *ch, struct iovec *iov, int n)
{
    if (ch->tls)
        return wc_tls_writev(ch->tls, iov, n);
    struct msghdr mh = {0};
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)n;
    ssize_t w = sendmsg(ch->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    return w < 0 ? -errno : w;
}

/* b->lock held: the client took bytes, or output began to wait in an
 * empty queue, now.  A stall is timed from here (wc_channel_sweep); reads
 * never move this clock. */
static void
stamp(wc_busy_t *b)
{
    atomic_store_explicit(&b->out_at, wc_now_ms(), memory_order_relaxed);
}

/* b->lock held (or the channel is being freed): hand the queue's done
 * reference segments to the server, for a worker to release. */
void
wc_channel_give_back(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    wc_seg_t *dead = b->out.dead;
    if (dead == NULL)
        return;
    b->out.dead = NULL;
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

/* b->lock held.  Send what can go of the file segment at the head of the
 * queue: sendfile(2), or, for a file sendfile refuses (EINVAL, ENOSYS:
 * some file systems), a block read into memory (b->wblk) and sent from
 * there.  Returns 1 when the socket is full, -1 when the connection is
 * broken, 0 to go on. */
static int
send_file_seg(wc_channel_t *ch, wc_busy_t *b)
{
    wc_seg_t *s = b->out.head;
    size_t left = s->len - s->off;
    size_t step = left < SENDFILE_STEP ? left : SENDFILE_STEP;
    if (step == 0) {
        wc_outq_consume(&b->out, 0);
        return 0;
    }
    if (ch->tls)
        s->no_sendfile = 1;
    if (!s->no_sendfile) {
        off_t off = s->file_off;
        ssize_t w = sendfile(ch->fd, s->fd, &off, step);
        if (w > 0) {
            wc_m_own_add(ch->srv->m, WC_M_BYTES_OUT_LOOP, (uint64_t)w);
            wc_outq_consume(&b->out, (size_t)w);
            stamp(b);
            return 0;
        }
        if (w == 0)
            return -1;  /* the file is shorter than promised: cut off */
        if (errno == EINTR)
            return 0;
        if (errno == EAGAIN)
            return 1;
        if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
            return -1;
        s->no_sendfile = 1;
    }
    /* The next block from memory; the segment advances now, the block is
     * written before anything else. */
    size_t want = left < FILE_BLOCK ? left : FILE_BLOCK;
    char *blk = malloc(want);
    if (blk == NULL)
        return -1;
    ssize_t r = pread(s->fd, blk, want, s->file_off);
    if (r <= 0) {
        free(blk);
        return -1;
    }
    wc_outq_consume(&b->out, (size_t)r);
    b->wblk = blk;
    b->wblk_len = (size_t)r;
    b->wblk_off = 0;
    return 0;
}

/* Write what the queue holds while the socket takes it; when it is full,
 * poll for POLLOUT (wc_channel_io calls back here).  Loop thread. */
void
wc_channel_flush(wc_channel_t *ch)
{
    struct iovec iov[WC_IOV_MAX];
    wc_busy_t *b = ch->b;
    int full = 0;

    if (ch->state == WC_CONN_CLOSED || b == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    while (!b->broken && (b->wblk || b->out.head)) {
        if (b->wblk) {
            struct iovec blk = {b->wblk + b->wblk_off,
                                b->wblk_len - b->wblk_off};
            ssize_t w = out_write(ch, &blk, 1);
            if (w < 0) {
                if (w == -EINTR)
                    continue;
                if (w == -EAGAIN) {
                    full = 1;
                    break;
                }
                b->broken = 1;
                break;
            }
            stamp(b);
            wc_m_own_add(ch->srv->m, WC_M_BYTES_OUT_LOOP, (uint64_t)w);
            b->wblk_off += (size_t)w;
            if (b->wblk_off == b->wblk_len) {
                free(b->wblk);
                b->wblk = NULL;
            }
            continue;
        }
        size_t total;
        int n = wc_outq_iov(&b->out, iov, WC_IOV_MAX, &total);
        if (n == 0 && b->out.head && b->out.head->fd >= 0) {
            int rv = send_file_seg(ch, b);
            if (rv < 0) {
                b->broken = 1;
                break;
            }
            if (rv > 0) {
                full = 1;
                break;
            }
            continue;
        }
        if (n == 0)
            break;
        ssize_t w = out_write(ch, iov, n);
        if (w < 0) {
            if (w == -EINTR)
                continue;
            if (w != -EAGAIN) {
                b->broken = 1;
                break;
            }
            w = 0;
        }
        wc_outq_consume(&b->out, (size_t)w);
        if (w > 0) {
            stamp(b);
            wc_m_own_add(ch->srv->m, WC_M_BYTES_OUT_LOOP, (uint64_t)w);
        }
        if ((size_t)w < total) {
            full = 1;   /* the socket is full */
            break;
        }
    }
    b->writing = full && !b->broken;
    if (b->waiters && (b->broken || b->out.bytes
                       <= park_mark(ch)))
        wc_channel_wake_waiters(ch);
    wc_channel_give_back(ch);
    int writing = b->writing;
    pthread_mutex_unlock(&b->lock);
    wc_channel_want_write(ch, writing);
    wc_channel_maybe_close(ch);
}

/* ---- parking ----------------------------------------------------------- */

/* ch->b->lock held. */
void
wc_channel_wake_waiters(wc_channel_t *ch)
{
    for (wc_waiter_t *w = ch->b->waiters; w; w = w->next)
        pthread_cond_signal(&w->cond);
}

/* ch->b->lock held.  Park the calling thread (no GIL) until it is woken. */
static void
park(wc_channel_t *ch, wc_waiter_t *me)
{
    me->next = ch->b->waiters;
    ch->b->waiters = me;
    pthread_cond_wait(&me->cond, &ch->b->lock);
    wc_waiter_t **pp = &ch->b->waiters;
    while (*pp != me)
        pp = &(*pp)->next;
    *pp = me->next;
}

/* ---- the workers' writes --------------------------------------------------
 * Called by workers and app threads, GIL held or not.  ch->b->lock serializes
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
    pthread_mutex_lock(&ch->b->lock);
    int rv = wc_channel_send_locked(ch, iov, owners, n, defer);
    if (rv == 0 && ch->b->out.bytes > park_mark(ch))
        rv = 1;
    pthread_mutex_unlock(&ch->b->lock);
    return rv;
}

#define DEFER_MAX 65536

static int
queue_iov(wc_channel_t *ch, struct iovec *iov, void **owners, int n)
{
    size_t overflow = ch->srv->cfg.outbuf_overflow;
    if (ch->b->out.bytes == 0)
        stamp(ch->b);      /* a stall is timed from here */
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        void *obj = owners ? owners[i] : NULL;
        int r;
        /* TLS: everything past a record is queued, for a client that
         * reads as fast as it can too, and a large block the app hands
         * over would go to the temp file and back (a 1 MiB body: written
         * to disk, read again, then encrypted).  So on TLS a block the
         * app owns is kept by reference while the socket takes what the
         * loop writes; once the client is slow (b->writing), it spills
         * above outbuf_overflow as on a plain connection. */
        int keep = ch->secure && obj != NULL && len >= ZC_MIN
                   && !ch->b->writing;
        if (!keep && ch->b->out.mem + len > overflow && len > 0) {
            r = wc_outq_spill(&ch->b->out, ch->srv->cfg.tmpdir,
                              iov[i].iov_base, len);
        } else if (obj != NULL && len >= ZC_MIN) {
            r = wc_outq_append_ref(&ch->b->out, iov[i].iov_base, len, obj);
            if (r == 0)
                wc_dispatch_retain(obj);
        } else {
            r = wc_outq_append(&ch->b->out, iov[i].iov_base, len);
        }
        if (r < 0) {
            ch->b->broken = 1;
            return r;
        }
    }
    return 0;
}

/* The same, with ch->b->lock held by the caller.  n == 0 flushes what the
 * worker queued. */
int
wc_channel_send_locked(wc_channel_t *ch, struct iovec *iov, void **owners,
                       int n, int defer)
{
    struct iovec all[WC_IOV_MAX * 2];
    size_t qtotal = 0, total = 0;
    int k = 0, rv;

    if (ch->b->broken)
        return UV_EPIPE;
    if (ch->kind == WC_KIND_STREAM)
        goto queue_rest;    /* HTTP/2: the loop frames it (h2.c) */
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (defer && !ch->b->writing && ch->b->out.mem + total < DEFER_MAX
        && ch->b->out.bytes == ch->b->out.mem) {
        /* Held back for the next write of this worker; the loop's tick
         * sends it within a millisecond if that write is slow to come
         * (PEP 3333: transmission goes on while the app makes the next
         * block). */
        rv = queue_iov(ch, iov, owners, n);
        if (rv == 0 && !ch->b->deferred) {
            wc_server_t *srv = ch->srv;
            ch->b->deferred = 1;
            atomic_fetch_add(&ch->refs, 1);
            pthread_mutex_lock(&srv->qlock);
            ch->b->defer_next = srv->defer_head;
            srv->defer_head = ch;
            /* The tick is off (nothing was held back): wake the loop so
             * that it starts it. */
            if (!srv->tick_on && srv->async_live)
                uv_async_send(&srv->async);
            pthread_mutex_unlock(&srv->qlock);
        }
        return rv;
    }
    /* TLS: a worker encrypts and writes only what makes one record (a
     * small response, whole), on an HTTP/1 connection (the loop frames
     * HTTP/2), and never a file block the loop is in the middle of;
     * larger output goes to the loop, which encrypts without the GIL.
     * The loop takes b->lock around everything it does with the SSL
     * object of a connection a worker may write to (channel.c:
     * read_some, linger). */
    int tls = ch->secure;
    if (tls && (ch->tls == NULL || ch->kind != WC_KIND_H1 || ch->b->wblk
                || total > WC_TLS_RECORD))
        goto queue_rest;
    if (!ch->b->writing && ch->b->out.head) {
        /* Queued bytes go first; only memory ones, all of them. */
        k = wc_outq_iov(&ch->b->out, all, WC_IOV_MAX, &qtotal);
        if (qtotal != ch->b->out.bytes)
            goto queue_rest;    /* a file or more than fits: the loop's */
        if (tls && qtotal + total > WC_TLS_RECORD)
            goto queue_rest;
    }
    /* A record OpenSSL refuses (WANT_WRITE) stays inside it, and the
     * retry must offer at least its bytes again; the loop's offers only
     * what is in memory before the queue's first file segment.  So the
     * record must fit in memory behind what is queued: had queue_iov
     * spilled part of it to the temp file (outbuf_overflow below a
     * record), the retry would offer fewer bytes and OpenSSL would fail
     * the connection (bad write retry). */
    if (tls && qtotal + total > ch->srv->cfg.outbuf_overflow)
        goto queue_rest;
    if (ch->b->writing)
        goto queue_rest;
    if (n > 0)
        memcpy(all + k, iov, (size_t)n * sizeof(*iov));
    if (k + n == 0)
        return 0;
    ssize_t w;
    do {
        w = out_write(ch, all, k + n);
    } while (w == -EINTR);
    if (w < 0) {
        if (w != -EAGAIN) {
            ch->b->broken = 1;
            wc_channel_kick(ch);
            return UV_EPIPE;
        }
        w = 0;
    }
    if (w > 0) {
        stamp(ch->b);
        wc_m_add(ch->srv->m, WC_M_BYTES_OUT, w);
    }
    size_t left = (size_t)w;
    size_t from_q = left < qtotal ? left : qtotal;
    if (from_q) {
        wc_outq_consume(&ch->b->out, from_q);
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
    if (n == 0 && ch->b->out.head == NULL)
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
    pthread_mutex_lock(&ch->b->lock);
    if (ch->b->broken)
        rv = UV_EPIPE;
    else if ((rv = wc_outq_append_file(&ch->b->out, fd, off, n, close_fd)) == 0)
        wc_channel_kick(ch);
    pthread_mutex_unlock(&ch->b->lock);
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
    uint64_t hwm = park_mark(ch);
    wc_waiter_t me;
    pthread_cond_init(&me.cond, NULL);
    pthread_mutex_lock(&ch->b->lock);
    int parked = !ch->b->broken && ch->b->out.bytes > hwm;
    if (parked)
        wc_m_add(ch->srv->m, WC_M_PARKED, 1);
    while (!ch->b->broken && ch->b->out.bytes > hwm)
        park(ch, &me);
    if (parked)
        wc_m_add(ch->srv->m, WC_M_PARKED, -1);
    if (ch->b->broken)
        rv = UV_EPIPE;
    pthread_mutex_unlock(&ch->b->lock);
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
    pthread_mutex_lock(&ch->b->lock);
    ch->b->writers++;
    pthread_mutex_unlock(&ch->b->lock);
}

void
wc_channel_writer_leave(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->b->lock);
    if (--ch->b->writers == 0)
        wc_channel_wake_waiters(ch);
    pthread_mutex_unlock(&ch->b->lock);
}

int
wc_channel_has_writers(wc_channel_t *ch)
{
    pthread_mutex_lock(&ch->b->lock);
    int n = ch->b->writers;
    pthread_mutex_unlock(&ch->b->lock);
    return n > 0;
}

void
wc_channel_wait_writers(wc_channel_t *ch)
{
    wc_waiter_t me;
    pthread_cond_init(&me.cond, NULL);
    pthread_mutex_lock(&ch->b->lock);
    while (ch->b->writers > 0)
        park(ch, &me);
    pthread_mutex_unlock(&ch->b->lock);
    pthread_cond_destroy(&me.cond);
}

/* Any thread, at any time: the channel itself outlives the caller's
 * reference, its busy part may not. */
int
wc_channel_disconnected(wc_channel_t *ch)
{
    int gone = atomic_load_explicit(&ch->gone, memory_order_relaxed);
    return gone == WC_GONE_CLOSED
           || (gone == WC_GONE_EOF && ch->srv->cfg.lookahead > 0);
}

uint64_t
wc_channel_unsent(wc_channel_t *ch)
{
    wc_busy_t *b = ch->b;
    pthread_mutex_lock(&b->lock);
    uint64_t n = 0;
    if (b->broken)
        n = b->out.bytes + (b->wblk ? b->wblk_len - b->wblk_off : 0);
    pthread_mutex_unlock(&b->lock);
    return n;
}
