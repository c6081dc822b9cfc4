/* fuzz_request.c: libFuzzer driver for the request parser (parser.c and
 * buffer.c, exactly as the loop thread drives them in channel.c: head scan,
 * head parse, Content-Length or chunked body, pipelined requests).  The
 * first input byte picks the read size, so the same bytes are also tried
 * split across reads.  `make fuzz` builds and runs it with the corpus and
 * dictionary beside this file. */
#include "wc.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    wc_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_header = 2048;
    cfg.max_body = 65536;
    cfg.inbuf_overflow = 1024;

    size_t step = (size_t)(data[0] % 97) + 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    wc_request_t *r = NULL;
    int state = WC_PARSE_HEAD, requests = 0, stop = 0;

    while (n > 0 && !stop && requests < 64) {
        size_t chunk = n < step ? n : step;
        const char *c = p;
        size_t left = chunk;
        while (left > 0 && !stop) {
            size_t used = 0;
            int complete = 0, done = 0;
            if (r == NULL) {
                r = wc_request_new(cfg.inbuf_overflow);
                if (r == NULL)
                    abort();
                state = WC_PARSE_HEAD;
            }
            switch (state) {
            case WC_PARSE_HEAD:
                used = wc_head_scan(r, c, left, &complete, &cfg);
                if (used > left)
                    abort();
                if (r->error_status) {
                    stop = 1;
                    break;
                }
                if (!complete)
                    break;
                wc_parse_head(r, &cfg);
                if (r->error_status) {
                    stop = 1;
                    break;
                }
                check_request(r);
                if (r->chunked)
                    state = WC_PARSE_CHUNKED;
                else if (r->body_remaining)
                    state = WC_PARSE_BODY;
                else
                    done = 1;
                break;
            case WC_PARSE_BODY:
                used = left < r->body_remaining ? left
                                                : (size_t)r->body_remaining;
                if (wc_spool_write(&r->body, c, used) < 0)
                    abort();
                r->body_remaining -= used;
                done = r->body_remaining == 0;
                break;
            case WC_PARSE_CHUNKED:
                used = wc_chunked_feed(r, c, left, &complete, &cfg);
                if (used > left)
                    abort();
                if (r->error_status)
                    stop = 1;
                done = complete;
                break;
            }
            c += used;
            left -= used;
            if (done) {
                if (r->body.len > cfg.max_body)
                    abort();
                if (!r->chunked && r->content_length >= 0
                    && r->body.len != (uint64_t)r->content_length)
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
    return 0;
}
