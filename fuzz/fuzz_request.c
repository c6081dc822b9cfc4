/* fuzz_request.c: libFuzzer driver for the request parser (parser.c and
 * buffer.c).  The first input byte picks one of three modes (its value
 * modulo 4):
 *
 *   0, 1  a byte stream through wc_request_feed, the function the loop
 *         thread calls (channel.c): head scan, head parse, Content-Length
 *         or chunked body, pipelined requests.  The same byte picks the
 *         read size, so the bytes are also tried split across reads.
 *   2     a chunked body (after a second byte that picks a piece size), fed
 *         to wc_chunked_feed whole, byte by byte and in pieces: the three
 *         must agree on every outcome, and the decoded body is never longer
 *         than the bytes consumed.
 *   3     a request target (after a second byte: 'C' for CONNECT, anything
 *         else for GET) in a minimal request: the spans must lie inside the
 *         head, and the split must be the one http_parser_parse_url gives
 *         (the splitter parser.c used to call; it is right below 64 KiB).
 *
 * `make fuzz` builds and runs it with the corpus and dictionary beside
 * this file; seeds start with their mode byte ('@' stream, 'B' chunked,
 * 'C' target). */
#include "loop.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
init_cfg(wc_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_header = 2048;
    cfg->max_body = 65536;
    cfg->inbuf_overflow = 1024;
}

static void
check_request(const wc_request_t *r)
{
    /* Every span the worker will read must lie inside the head. */
    const char *lo = r->head.data, *hi = r->head.data + r->head.len;
#define INSIDE(p, n) \
    if ((p) && !((p) >= lo && (p) + (n) <= hi) && (p) != wc_slash) \
        abort()
    INSIDE(r->method, r->method_len);
    INSIDE(r->target, r->target_len);
    INSIDE(r->path, r->path_len);
    INSIDE(r->query, r->query_len);
    INSIDE(r->authority, r->authority_len);
    for (uint32_t i = 0; i < r->nheaders; i++) {
        INSIDE(r->headers[i].name, r->headers[i].name_len);
        INSIDE(r->headers[i].value, r->headers[i].value_len);
        if (memchr(r->headers[i].name, '_', r->headers[i].name_len))
            abort();    /* underscore names are dropped */
    }
#undef INSIDE
    if (r->version != 10 && r->version != 11)
        abort();
    if (r->path == NULL)
        abort();
}

/* ---- mode 0/1: a stream of requests ----------------------------------- */

static void
fuzz_stream(const char *p, size_t n, size_t step)
{
    wc_config_t cfg;
    init_cfg(&cfg);
    wc_request_t *r = NULL;
    int requests = 0, stop = 0;

    while (n > 0 && !stop && requests < 64) {
        size_t chunk = n < step ? n : step;
        const char *c = p;
        size_t left = chunk;
        while (left > 0 && !stop) {
            size_t used = 0;
            if (r == NULL) {
                r = wc_request_new(cfg.inbuf_overflow);
                if (r == NULL)
                    abort();
            }
            int was_head = r->pstate == WC_PARSE_HEAD;
            int rv = wc_request_feed(r, c, left, &used, &cfg);
            if (used > left)
                abort();
            if (rv == WC_FEED_ERROR) {
                if (!r->error_status)
                    abort();
                stop = 1;
            } else if (r->error_status) {
                abort();        /* an error is always reported */
            } else if (rv == WC_FEED_MORE && used != left) {
                abort();        /* it never stops short without a reason */
            }
            if (was_head && r->pstate != WC_PARSE_HEAD && !r->error_status)
                check_request(r);
            c += used;
            left -= used;
            if (rv == WC_FEED_DONE) {
                if (r->pstate != WC_PARSE_DONE)
                    abort();
                if (r->body.len > cfg.max_body)
                    abort();
                if (!r->chunked && r->content_length >= 0
                    && r->body.len != (uint64_t)r->content_length)
                    abort();
                if (r->chunked && r->body.len > r->raw_body)
                    abort();
                if (r->blank > WC_MAX_BLANK)
                    abort();
                wc_request_free(r);
                r = NULL;
                requests++;
            }
        }
        p += chunk;
        n -= chunk;
    }
    wc_request_free(r);
}

/* ---- mode 2: the chunked decoder ---------------------------------------- */

struct outcome {
    size_t consumed;
    int done;
    int status;
    uint64_t len;
    char *body;         /* the decoded bytes, malloc'd */
};

static void
feed_chunked(const char *p, size_t n, size_t piece, struct outcome *o)
{
    wc_config_t cfg;
    init_cfg(&cfg);
    wc_request_t *r = wc_request_new(cfg.inbuf_overflow);
    if (r == NULL)
        abort();
    r->chunked = 1;
    memset(o, 0, sizeof(*o));
    size_t off = 0;
    while (off < n && !o->done && !r->error_status) {
        size_t left = n - off < piece ? n - off : piece;
        size_t used = wc_chunked_feed(r, p + off, left, &o->done, &cfg);
        if (used > left)
            abort();
        if (!o->done && !r->error_status && used != left)
            abort();
        off += used;
        o->consumed += used;
    }
    o->status = r->error_status;
    o->len = r->body.len;
    if (o->done && o->status)
        abort();
    if (o->len > o->consumed || r->raw_body != o->consumed)
        abort();
    if (o->done && o->len + 5 > o->consumed)
        abort();        /* at least "0\r\n\r\n" of framing */
    if (r->body.len > cfg.max_body)
        abort();
    o->body = malloc(o->len + 1);
    if (o->body == NULL)
        abort();
    if (r->body.fd >= 0) {
        if (pread(r->body.fd, o->body, o->len, 0) != (ssize_t)o->len)
            abort();
    } else if (o->len) {
        memcpy(o->body, r->body.mem.data, o->len);
    }
    wc_request_free(r);
}

static void
same(const struct outcome *a, const struct outcome *b)
{
    if (a->consumed != b->consumed || a->done != b->done
        || a->status != b->status || a->len != b->len
        || memcmp(a->body, b->body, a->len) != 0)
        abort();
}

static void
fuzz_chunked(const char *p, size_t n, size_t piece)
{
    struct outcome whole, bytes, pieces;
    feed_chunked(p, n, n ? n : 1, &whole);
    feed_chunked(p, n, 1, &bytes);
    feed_chunked(p, n, piece, &pieces);
    same(&whole, &bytes);
    same(&whole, &pieces);
    free(whole.body);
    free(bytes.body);
    free(pieces.body);
}

/* ---- mode 3: request targets --------------------------------------------- */

/* What parser.c did with http_parser_parse_url; 0 if it refused. */
static int
old_split(const char *t, size_t n, int is_connect, wc_request_t *o)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(t, n, is_connect, &u) != 0
        || !(u.field_set & (1 << UF_HOST)))
        return 0;
    if (is_connect) {
        o->authority = o->path = t;
        o->authority_len = o->path_len = (uint32_t)n;
        return 1;
    }
    size_t hoff = u.field_data[UF_HOST].off;
    size_t hend = hoff + u.field_data[UF_HOST].len;
    if (u.field_set & (1 << UF_PORT))
        hend = u.field_data[UF_PORT].off + u.field_data[UF_PORT].len;
    if (hoff > 0 && t[hoff - 1] == '[')
        hoff--;
    if (hend < n && t[hend] == ']')
        hend++;
    o->authority = t + hoff;
    o->authority_len = (uint32_t)(hend - hoff);
    if (u.field_set & (1 << UF_PATH)) {
        o->path = t + u.field_data[UF_PATH].off;
        o->path_len = u.field_data[UF_PATH].len;
    } else {
        o->path = wc_slash;
        o->path_len = 1;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        o->query = t + u.field_data[UF_QUERY].off;
        o->query_len = u.field_data[UF_QUERY].len;
    }
    return 1;
}

static int
same_span(const char *a, uint32_t alen, const char *b, uint32_t blen)
{
    if ((a == NULL) != (b == NULL))
        return 0;
    return a == NULL || (alen == blen && memcmp(a, b, alen) == 0);
}

static void
fuzz_target(const char *t, size_t n, int is_connect)
{
    static const char tail[] = " HTTP/1.1\r\nHost: x\r\n\r\n";
    const char *method = is_connect ? "CONNECT " : "GET ";
    size_t mlen = strlen(method);
    if (memchr(t, '\r', n) || memchr(t, '\n', n))
        return;     /* line framing: the stream mode's business */
    wc_config_t cfg;
    init_cfg(&cfg);
    cfg.max_header = 1 << 20;
    wc_request_t *r = wc_request_new(cfg.inbuf_overflow);
    if (r == NULL)
        abort();
    int complete = 0;
    size_t used = wc_head_scan(r, method, mlen, &complete, &cfg);
    used += wc_head_scan(r, t, n, &complete, &cfg);
    if (complete || r->error_status)
        abort();
    used += wc_head_scan(r, tail, sizeof(tail) - 1, &complete, &cfg);
    if (!complete || r->error_status || used != mlen + n + sizeof(tail) - 1)
        abort();
    wc_parse_head(r, &cfg);
    if (!r->error_status)
        check_request(r);

    /* The differential check, where the old splitter applied: a
     * non-empty target of visible ASCII, not origin- or asterisk-form. */
    const char *tt = r->head.data + mlen;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            goto done;
    if (n == 0 || t[0] == '/' || (n == 1 && t[0] == '*'))
        goto done;
    wc_request_t old;
    memset(&old, 0, sizeof(old));
    int old_ok = old_split(tt, n, is_connect, &old);
    int ok = r->error_status == 0;
    if (!ok && (r->error_status != 400 || strcmp(r->error_detail, "Bad URI")))
        abort();
    /* Deliberate: CONNECT "user@host:port" and "host:port?" (the old
     * splitter saw an empty query there) are refused now. */
    if (is_connect && !ok && old_ok
        && (memchr(t, '@', n) || memchr(t, '?', n)))
        goto done;
    if (ok != old_ok)
        abort();
    if (ok && (!same_span(r->authority, r->authority_len, old.authority,
                          old.authority_len)
               || !same_span(r->path, r->path_len, old.path, old.path_len)
               || !same_span(r->query, r->query_len, old.query,
                             old.query_len)))
        abort();
done:
    wc_request_free(r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *p = (const char *)data;
    switch (data[0] % 4) {
    case 0:
    case 1:
        fuzz_stream(p + 1, size - 1, (size_t)(data[0] / 4 % 97) + 1);
        break;
    case 2:
        fuzz_chunked(p + 2, size - 2, (size_t)(data[1] % 31) + 1);
        break;
    case 3:
        fuzz_target(p + 2, size - 2, data[1] == 'C');
        break;
    }
    return 0;
}
