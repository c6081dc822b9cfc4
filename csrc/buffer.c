/* buffer.c: growable byte buffers, the request-body spool (memory, then an
 * unlinked temp file), and the per-channel output segment queue.
 *
 * GIL map: nothing here touches Python.  Buffers are owned by one thread at
 * a time; the output queue is shared and its callers hold the channel lock.
 * A segment that refers to an object's bytes (wc_outq_append_ref) is not
 * freed here when it is done: it goes to q->dead, for a thread that holds
 * the GIL to release (dispatch.c).
 */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A queue's first memory segment is sized to what it must hold (at least
 * SEG_FIRST): a response that the socket did not take whole leaves a few
 * hundred bytes, not a 64 KiB block, on each of many slow connections.
 * Later ones, for a stream that keeps coming, take SEG_MIN. */
#define SEG_FIRST 2048
#define SEG_MIN 65536

/* Decimal digits of v into buf (24 bytes); returns the length.  For the
 * per-request numbers, where printf's machinery costs more than the
 * digits. */
size_t
wc_fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

int
wc_buf_reserve(wc_buf_t *b, size_t extra)
{
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return UV_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int
wc_buf_append(wc_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rv = wc_buf_reserve(b, n);
    if (rv < 0)
        return rv;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int
wc_buf_appendf(wc_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return UV_EINVAL;
    if ((size_t)n < sizeof(small))
        return wc_buf_append(b, small, (size_t)n);
    int rv = wc_buf_reserve(b, (size_t)n + 1);
    if (rv < 0)
        return rv;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void
wc_buf_free(wc_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- spool -------------------------------------------------------------- */

/* An unlinked temp file in `dir` (the server's tmpdir, read once when it
 * was created: never getenv on the loop thread, which would race with the
 * app's os.environ changes). */
static int
open_tempfile(const char *dir)
{
    if (dir == NULL || *dir == '\0')
        dir = "/tmp";
#ifdef O_TMPFILE
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
#endif
    char path[4096];
    snprintf(path, sizeof(path), "%s/waitress_c-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(path);
    return fd;
}

static int
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void
wc_spool_init(wc_spool_t *s, size_t overflow)
{
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    s->overflow = overflow;
}

int
wc_spool_write(wc_spool_t *s, const char *p, size_t n)
{
    int rv;
    if (n == 0)
        return 0;
    if (s->fd < 0 && s->mem.len + n > s->overflow) {
        int fd = open_tempfile(s->dir);
        if (fd < 0)
            return fd;
        rv = write_all(fd, s->mem.data, s->mem.len);
        if (rv < 0) {
            close(fd);
            return rv;
        }
        wc_buf_free(&s->mem);
        s->fd = fd;
    }
    if (s->fd >= 0)
        rv = write_all(s->fd, p, n);
    else
        rv = wc_buf_append(&s->mem, p, n);
    if (rv == 0)
        s->len += n;
    return rv;
}

void
wc_spool_free(wc_spool_t *s)
{
    wc_buf_free(&s->mem);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->len = 0;
}

/* ---- output queue ------------------------------------------------------- */

static wc_seg_t *
seg_new(size_t cap)
{
    wc_seg_t *s = malloc(sizeof(*s) + cap);
    if (s == NULL)
        return NULL;
    s->next = NULL;
    s->base = s->data;
    s->obj = NULL;
    s->off = s->len = 0;
    s->cap = cap;
    s->fd = -1;
    s->close_fd = 0;
    s->no_sendfile = 0;
    s->file_off = 0;
    return s;
}

static void
seg_link(wc_outq_t *q, wc_seg_t *s)
{
    if (q->tail)
        q->tail->next = s;
    else
        q->head = s;
    q->tail = s;
}

int
wc_outq_append(wc_outq_t *q, const char *p, size_t n)
{
    q->bytes += n;
    q->mem += n;
    wc_seg_t *t = q->tail;
    if (t && t->fd < 0 && t->obj == NULL && t->cap > t->len) {
        size_t room = t->cap - t->len;
        size_t k = n < room ? n : room;
        memcpy(t->data + t->len, p, k);
        t->len += k;
        p += k;
        n -= k;
    }
    if (n == 0)
        return 0;
    size_t least = q->head ? SEG_MIN : SEG_FIRST;
    wc_seg_t *s = seg_new(n > least ? n : least);
    if (s == NULL) {
        q->bytes -= n;
        q->mem -= n;
        return UV_ENOMEM;
    }
    memcpy(s->data, p, n);
    s->len = n;
    seg_link(q, s);
    return 0;
}

/* Queue n bytes at p without copying them: they belong to `obj`, which
 * the caller keeps alive (one reference, given to the queue) until the
 * segment comes back through q->dead. */
int
wc_outq_append_ref(wc_outq_t *q, const char *p, size_t n, void *obj)
{
    wc_seg_t *s = seg_new(0);
    if (s == NULL)
        return UV_ENOMEM;
    s->base = p;
    s->obj = obj;
    s->len = n;
    seg_link(q, s);
    q->bytes += n;
    q->mem += n;
    return 0;
}

int
wc_outq_append_file(wc_outq_t *q, int fd, off_t off, uint64_t n, int close_fd)
{
    wc_seg_t *s = seg_new(0);
    if (s == NULL)
        return UV_ENOMEM;
    s->fd = fd;
    s->close_fd = close_fd;
    s->no_sendfile = 0;
    s->file_off = off;
    s->len = (size_t)n;
    seg_link(q, s);
    q->bytes += n;
    return 0;
}

void
wc_outq_init(wc_outq_t *q)
{
    memset(q, 0, sizeof(*q));
    q->spill_fd = -1;
}

/* Append bytes to the queue's temp file (waitress's outbuf_overflow: a
 * slow reader of a big response costs disk, not memory).  The loop sends
 * them with sendfile like any file segment. */
int
wc_outq_spill(wc_outq_t *q, const char *dir, const char *p, size_t n)
{
    int rv;
    if (n == 0)
        return 0;
    if (q->spill_fd < 0) {
        int fd = open_tempfile(dir);
        if (fd < 0)
            return fd;
        q->spill_fd = fd;
        q->spill_end = 0;
    }
    off_t at = (off_t)q->spill_end;
    size_t left = n;
    const char *s = p;
    while (left > 0) {
        ssize_t w = pwrite(q->spill_fd, s, left, at);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        s += w;
        at += w;
        left -= (size_t)w;
    }
    wc_seg_t *t = q->tail;
    if (t && t->fd == q->spill_fd
        && (uint64_t)t->file_off + (t->len - t->off) == q->spill_end) {
        t->len += n;        /* contiguous with the last spilled bytes */
        q->bytes += n;
    } else if ((rv = wc_outq_append_file(q, q->spill_fd,
                                         (off_t)q->spill_end, n, 0)) < 0) {
        return rv;
    }
    q->spill_end += n;
    return 0;
}

/* Fill iov from the head, stopping at a file segment.  Returns the count;
 * 0 with q->head a file segment means "sendfile next". */
int
wc_outq_iov(wc_outq_t *q, struct iovec *iov, int max, size_t *total)
{
    int n = 0;
    size_t sum = 0;
    for (wc_seg_t *s = q->head; s && n < max; s = s->next) {
        if (s->fd >= 0)
            break;
        if (s->len > s->off) {
            iov[n].iov_base = (char *)s->base + s->off;
            iov[n].iov_len = s->len - s->off;
            sum += iov[n].iov_len;
            n++;
        }
    }
    *total = sum;
    return n;
}

static void
seg_free(wc_outq_t *q, wc_seg_t *s)
{
    if (s->obj != NULL) {
        s->next = q->dead;
        q->dead = s;
        return;
    }
    if (s->fd >= 0 && s->close_fd)
        close(s->fd);
    free(s);
}

void
wc_outq_consume(wc_outq_t *q, size_t n)
{
    q->bytes -= n;
    while (q->head) {
        wc_seg_t *s = q->head;
        size_t avail = s->len - s->off;
        if (n < avail) {
            s->off += n;
            if (s->fd >= 0)
                s->file_off += (off_t)n;
            else
                q->mem -= n;
            break;
        }
        n -= avail;
        if (s->fd < 0)
            q->mem -= avail;
        q->head = s->next;
        if (q->head == NULL)
            q->tail = NULL;
        seg_free(q, s);
    }
    if (q->head == NULL && q->spill_fd >= 0 && q->spill_end > 0) {
        /* Everything spilled is sent: give the disk space back. */
        if (ftruncate(q->spill_fd, 0) == 0)
            q->spill_end = 0;
    }
}

void
wc_outq_free(wc_outq_t *q)
{
    wc_seg_t *s = q->head;
    while (s) {
        wc_seg_t *next = s->next;
        seg_free(q, s);
        s = next;
    }
    q->head = q->tail = NULL;
    q->bytes = q->mem = 0;
    if (q->spill_fd >= 0)
        close(q->spill_fd);
    q->spill_fd = -1;
}
