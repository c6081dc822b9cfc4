/* fuzz_h2.c: libFuzzer driver for the HTTP/2 input path (h2.c, with
 * nghttp2, parser.c's request struct, target.c and buffer.c).
 *
 * The input is what a client sends on one connection, after the preface
 * (which the driver adds): it goes through wc_h2_start and then, in reads
 * of a size the first byte picks, through a socketpair to wc_h2_io, the
 * calls the loop makes.  The rest of the server is played here, small and
 * synchronous: the "socket" takes every byte h2.c writes, and each request
 * dispatched is "served" at once by a pretend worker that sets a head,
 * queues a body and completes (or, one time in four, leaves without a
 * whole response, which h2.c must reset), before the loop's kick is
 * handled.  Every allocation must be given back: ASan's leak check runs at
 * the end of each input.
 *
 * `make fuzz-h2` builds and runs it with the corpus in fuzz/corpus-h2. */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static wc_server_t *srv;
static wc_channel_t *kicks[4096];
static int nkicks;
static unsigned served;

/* ---- the channel, as h2.c sees it ------------------------------------------ */

static wc_busy_t *
busy(void)
{
    wc_busy_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        abort();
    pthread_mutex_init(&b->lock, NULL);
    wc_outq_init(&b->out);
    return b;
}

static void
busy_free(wc_busy_t *b)
{
    wc_request_t *r = b->pend_head;
    while (r) {
        wc_request_t *next = r->next;
        wc_request_free(r);
        r = next;
    }
    wc_outq_free(&b->out);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

int
wc_channel_stream_init(wc_channel_t *ch, wc_channel_t *conn)
{
    ch->srv = conn->srv;
    ch->fd = -1;
    ch->kind = WC_KIND_STREAM;
    ch->state = WC_CONN_IDLE;
    atomic_init(&ch->refs, 1);
    ch->b = busy();
    ch->b->wants = WC_EV_IDLE;
    return 0;
}

void
wc_channel_kick(wc_channel_t *ch)
{
    if (ch->b->kicked)
        return;
    ch->b->kicked = 1;
    atomic_fetch_add(&ch->refs, 1);
    if (nkicks == (int)(sizeof(kicks) / sizeof(kicks[0])))
        abort();
    kicks[nkicks++] = ch;
}

/* The pretend worker: serves the request now. */
void
wc_channel_stream_dispatch(wc_channel_t *ch, wc_request_t *r)
{
    static const char head[] = "200content-type\0text/plain\0x-a\0b";
    wc_busy_t *b = ch->b;
    unsigned n = served++;
    int is_head = r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0;
    if (r->error_status)
        n = 0;  /* an error page: always whole */
    wc_request_free(r);
    b->busy = 1;
    atomic_fetch_add(&ch->refs, 1);     /* the task's */
    if (wc_h2_stream_head(ch, head, sizeof(head), is_head) == 0) {
        pthread_mutex_lock(&b->lock);
        if (!b->broken) {
            size_t len = 1 + n % 40000;
            char *body = malloc(len);
            if (body == NULL)
                abort();
            memset(body, 'x', len);
            if (wc_outq_append(&b->out, body, len) < 0)
                abort();
            free(body);
            wc_channel_kick(ch);
        }
        pthread_mutex_unlock(&b->lock);
        if (n % 4 != 3)
            wc_h2_stream_complete(ch);
    }
    pthread_mutex_lock(&b->lock);
    b->busy = 0;
    if (b->broken)
        wc_outq_free(&b->out);
    wc_channel_kick(ch);
    pthread_mutex_unlock(&b->lock);
    wc_channel_unref(ch);
}

void
wc_channel_stream_close(wc_channel_t *ch)
{
    ch->state = WC_CONN_CLOSED;
    pthread_mutex_lock(&ch->b->lock);
    ch->b->broken = 1;
    if (!ch->b->busy)
        wc_outq_free(&ch->b->out);
    pthread_mutex_unlock(&ch->b->lock);
}

void
wc_channel_unref(wc_channel_t *ch)
{
    if (atomic_fetch_sub(&ch->refs, 1) != 1)
        return;
    if (ch->b)
        busy_free(ch->b);
    free(ch);
}

/* The connection's socket takes everything. */
void
wc_channel_flush(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_CLOSED || ch->b == NULL)
        return;
    wc_outq_consume(&ch->b->out, (size_t)ch->b->out.bytes);
}

void
wc_channel_close(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_CLOSED)
        return;
    ch->state = WC_CONN_CLOSED;
    if (ch->b && ch->b->h2)
        wc_h2_free(ch);
}

void
wc_channel_done(wc_channel_t *ch)
{
    if (ch->state == WC_CONN_IDLE)
        ch->state = WC_CONN_DONE;
}

#ifdef WC_CHECKS
void
wc_assert_fail(const char *expr, const char *file, int line)
{
    abort();
}
#endif

void wc_channel_want_write(wc_channel_t *ch, int on) {}
void wc_channel_wake_waiters(wc_channel_t *ch) {}
void wc_channel_give_back(wc_channel_t *ch) { ch->b->out.dead = NULL; }
/* No TLS here (ch->tls is NULL): never reached, and no read ever waits
 * for the socket to take bytes. */
void wc_channel_check_ready(wc_channel_t *ch) {}
void wc_channel_read_waits_out(wc_channel_t *ch) {}
int wc_channel_read_resumes(wc_channel_t *ch, unsigned events) { return 0; }
void wc_server_log(wc_server_t *s, int level, const char *fmt, ...) {}
uint64_t wc_now_ms(void) { return 1; }
ssize_t wc_tls_read(wc_tls_conn_t *c, char *buf, size_t n, int idle) { return -EIO; }
wc_tls_info_t *wc_tls_info(wc_tls_conn_t *c) { return NULL; }

/* ---- the driver ---------------------------------------------------------------- */

static void
run_kicks(void)
{
    while (nkicks > 0) {
        wc_channel_t *ch = kicks[--nkicks];
        wc_h2_stream_kicked(ch);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (srv == NULL) {
        srv = calloc(1, sizeof(*srv));
        if (srv == NULL)
            abort();
        srv->cfg.max_header = 4096;
        srv->cfg.max_body = 65536;
        srv->cfg.inbuf_overflow = 1024;
        srv->cfg.outbuf_overflow = 65536;
        srv->cfg.outbuf_high_watermark = 65536;
        srv->cfg.channel_timeout_ms = 1000;
        srv->cfg.h2_max_streams = 8;
        srv->cfg.h2_window = 65535;
        srv->cfg.h2_frame = 16384;
        srv->cfg.h2_header_list = 4096;
        srv->m = srv->own_m;    /* the counters, as module.c sets them */
    }
    size_t step = 1 + data[0] % 64 * 37;
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        abort();
    wc_channel_t *ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        abort();
    ch->srv = srv;
    ch->fd = sv[0];
    ch->state = WC_CONN_IDLE;
    ch->events = EPOLLIN;
    atomic_init(&ch->refs, 1);
    ch->b = busy();
    static const char preface[] = WC_H2_PREFACE;
    wc_h2_start(ch, preface, sizeof(preface) - 1);
    run_kicks();
    while (size > 0 && ch->state == WC_CONN_IDLE) {
        size_t n = size < step ? size : step;
        if (write(sv[1], data, n) != (ssize_t)n)
            break;      /* the pair is full: enough */
        data += n;
        size -= n;
        wc_h2_io(ch, EPOLLIN);
        run_kicks();
    }
    if (ch->state == WC_CONN_IDLE) {
        wc_h2_sweep(ch, 1);
        run_kicks();
    }
    wc_channel_close(ch);
    run_kicks();
    close(sv[0]);
    close(sv[1]);
    busy_free(ch->b);
    free(ch);
    return 0;
}
