/* test_request_feed.c: table-driven unit tests of the request framing,
 * wc_request_feed (csrc/parser.c), without a socket or a server.
 *
 * Each case is an input, cut into parts: part i ends exactly where the
 * i-th expected request ends (pipelined requests, each with its leading
 * empty lines), and the parts after the last expected request are a
 * request that is still incomplete or that fails.  The bytes are fed the
 * way channel.c feeds a read: wc_request_feed until the read is used up, a
 * new request after each complete one.  Every case is run with the whole
 * input in one read, with the case's own read sizes (if any), split in two
 * at every byte boundary, and byte by byte: the outcome must be the same
 * each time.  The outcome is the requests (method, target and its split,
 * version, headers, body as read back from the spool's memory or temp
 * file, the flags) with the offset each ended at, then how the input
 * ended: at a request boundary, inside a head, a body or a chunked body,
 * or with an error status and detail.
 *
 * Output: one line per case, "ok NAME" or "FAIL NAME: why", then
 * "N passed, M failed"; the exit status is 1 on any failure.  argv[1], if
 * given, is the temp directory for spooled bodies.  tests/test_request_feed.py
 * builds and runs it; `make unit` too. */
#include "loop.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PARTS 8
#define MAX_READS 8
#define MAX_REQS 6

typedef struct {
    const char *s;
    size_t n;
} part_t;

/* A part from a string literal (embedded NULs included). */
#define P(lit) { lit, sizeof(lit) - 1 }

typedef struct {
    const char *method;         /* NULL ends the list */
    const char *target;
    const char *path;           /* NULL: not checked */
    const char *query;          /* NULL: none expected */
    const char *authority;      /* NULL: none expected */
    int version;
    const char *headers;        /* "Name: value\n" each, in order; NULL "" */
    const char *body;           /* NULL: empty */
    unsigned ka, chunked, close_after, expect, spooled;
} exp_req_t;

/* How the input ends. */
enum {
    T_END = 0,      /* at a request boundary: every request complete */
    T_HEAD,         /* inside a head (or its leading empty lines) */
    T_BODY,         /* inside a Content-Length body */
    T_CHUNKED,      /* inside a chunked body */
    T_ERROR,        /* the request after the expected ones fails */
};

static const char *const tail_names[] = {
    "end", "head", "body", "chunked", "error",
};

typedef struct {
    const char *name;
    part_t parts[MAX_PARTS];    /* ended by s == NULL */
    size_t reads[MAX_READS];    /* extra read sizes, 0-ended; the last
                                   read takes what is left */
    size_t max_header;          /* 0: the defaults (init_cfg) */
    uint64_t max_body;
    size_t inbuf_overflow;
    exp_req_t reqs[MAX_REQS];   /* ended by method == NULL */
    int tail;
    int status;                 /* T_ERROR */
    const char *detail;
    unsigned err_close;         /* the error request's close_after */
    /* Known: the detail quotes a header line with a bare LF "as far as
     * it is here" (wc_head_scan), so a split may shorten the quote.  Split
     * runs then check that their quote is a prefix of the whole one. */
    unsigned quote_split;
} case_t;

/* ---- the cases ------------------------------------------------------------ */

#define GET11 "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
#define H11 "Host: x\n"

static const case_t cases[] = {
    /* -- heads -- */
    {
        .name = "simple_get",
        .parts = {P("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\n"
                    "Accept: */*\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/a/b?x=1&y=2", .path = "/a/b",
                  .query = "x=1&y=2", .version = 11,
                  .headers = "Host: example.com\nAccept: */*\n", .ka = 1}},
    },
    {
        .name = "header_ows_trimmed_underscore_dropped",
        .parts = {P("GET / HTTP/1.1\r\nHost: \t x \t\r\nX-A:b\r\n"
                    "X_B: dropped\r\nX-Empty:\r\nX-In: a  b\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/", .path = "/", .version = 11,
                  .headers = "Host: x\nX-A: b\nX-Empty: \nX-In: a  b\n",
                  .ka = 1}},
    },
    {
        .name = "unknown_method",
        .parts = {P("PURGE /cache HTTP/1.1\r\nHost: x\r\n\r\n")},
        .reqs = {{.method = "PURGE", .target = "/cache", .version = 11,
                  .headers = H11, .ka = 1}},
    },
    {
        .name = "absolute_form",
        .parts = {P("GET http://example.com:8080/p?q=1#frag HTTP/1.1\r\n"
                    "Host: other\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "http://example.com:8080/p?q=1#frag",
                  .path = "/p", .query = "q=1", .authority = "example.com:8080",
                  .version = 11, .headers = "Host: other\n", .ka = 1}},
    },
    {
        .name = "absolute_form_empty_path",
        .parts = {P("GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "http://example.com", .path = "/",
                  .authority = "example.com", .version = 11, .headers = H11,
                  .ka = 1}},
    },
    {
        .name = "connect_authority_form",
        .parts = {P("CONNECT example.com:443 HTTP/1.1\r\n"
                    "Host: example.com:443\r\n\r\n")},
        .reqs = {{.method = "CONNECT", .target = "example.com:443",
                  .path = "example.com:443", .authority = "example.com:443",
                  .version = 11, .headers = "Host: example.com:443\n",
                  .ka = 1}},
    },
    {
        .name = "options_asterisk",
        .parts = {P("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")},
        .reqs = {{.method = "OPTIONS", .target = "*", .path = "*",
                  .version = 11, .headers = H11, .ka = 1}},
    },
    {
        .name = "trailing_space_after_version",
        .parts = {P("GET / HTTP/1.1 \t\r\nHost: x\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1}},
    },
    {
        .name = "head_incomplete",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\n")},
        .tail = T_HEAD,
    },
    {
        .name = "head_incomplete_ends_in_cr",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\n\r")},
        .tail = T_HEAD,
    },
    {
        /* The head's last byte is the read's last byte, for a request
         * without a body (complete at once) and for one with a body (the
         * body comes in the next read). */
        .name = "head_complete_at_end_of_read",
        .parts = {P(GET11), P("POST /up HTTP/1.1\r\nHost: x\r\n"
                              "Content-Length: 5\r\n\r\nhello")},
        .reads = {27, 49, 5},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1},
                 {.method = "POST", .target = "/up", .version = 11,
                  .headers = "Host: x\nContent-Length: 5\n", .body = "hello",
                  .ka = 1}},
    },
    {
        .name = "chunked_head_complete_at_end_of_read",
        .parts = {P("POST /c HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")},
        .reads = {57, 1, 2},
        .reqs = {{.method = "POST", .target = "/c", .version = 11,
                  .headers = "Host: x\nTransfer-Encoding: chunked\n",
                  .body = "abc", .chunked = 1, .ka = 1}},
    },

    /* -- pipelining: each request ends exactly at its last byte -- */
    {
        .name = "pipelined_gets",
        .parts = {P("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"),
                  P("GET /2?a HTTP/1.1\r\nHost: y\r\n\r\n"),
                  P("HEAD /3 HTTP/1.1\r\nHost: z\r\nConnection: close\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/1", .version = 11,
                  .headers = "Host: x\n", .ka = 1},
                 {.method = "GET", .target = "/2?a", .path = "/2", .query = "a",
                  .version = 11, .headers = "Host: y\n", .ka = 1},
                 {.method = "HEAD", .target = "/3", .version = 11,
                  .headers = "Host: z\nConnection: close\n", .ka = 0}},
    },
    {
        .name = "pipelined_then_partial_head",
        .parts = {P(GET11), P(GET11), P("GET /3 HTTP/1.1\r\nHo")},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1},
                 {.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1}},
        .tail = T_HEAD,
    },
    {
        .name = "pipelined_empty_lines_between",
        .parts = {P(GET11), P("\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
                  P("\r\n")},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1},
                 {.method = "GET", .target = "/2", .version = 11,
                  .headers = H11, .ka = 1}},
        .tail = T_HEAD,
    },
    {
        .name = "pipelined_bodies_mixed",
        .parts = {P("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
                    "abc"),
                  P("POST /b HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"),
                  P("GET /c HTTP/1.1\r\nHost: x\r\n\r\n"),
                  P("POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")},
        .reqs = {{.method = "POST", .target = "/a", .version = 11,
                  .headers = "Host: x\nContent-Length: 3\n", .body = "abc",
                  .ka = 1},
                 {.method = "POST", .target = "/b", .version = 11,
                  .headers = "Host: x\nTransfer-Encoding: chunked\n",
                  .body = "de", .chunked = 1, .ka = 1},
                 {.method = "GET", .target = "/c", .version = 11,
                  .headers = H11, .ka = 1},
                 {.method = "POST", .target = "/d", .version = 11,
                  .headers = "Host: x\nContent-Length: 0\n", .ka = 1}},
    },

    /* -- Content-Length bodies -- */
    {
        .name = "content_length_body",
        .parts = {P("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
                    "hello\r\n\r\nGE")},
        .reads = {30, 20, 5},
        .reqs = {{.method = "POST", .target = "/up", .version = 11,
                  .headers = "Host: x\nContent-Length: 11\n",
                  .body = "hello\r\n\r\nGE", .ka = 1}},
    },
    {
        .name = "content_length_body_incomplete",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
                    "abcd")},
        .tail = T_BODY,
    },
    {
        .name = "content_length_leading_zeros",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 003\r\n\r\n"
                    "xyz")},
        .reqs = {{.method = "POST", .target = "/", .version = 11,
                  .headers = "Host: x\nContent-Length: 003\n", .body = "xyz",
                  .ka = 1}},
    },
    {
        .name = "content_length_invalid",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n"
                    "xyz")},
        .tail = T_ERROR, .status = 400, .detail = "Content-Length is invalid",
    },
    {
        .name = "content_length_list",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n"
                    "\r\nxyz")},
        .tail = T_ERROR, .status = 400, .detail = "Content-Length is invalid",
    },
    {
        .name = "content_length_duplicate",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                    "content-length: 1\r\n\r\na")},
        .tail = T_ERROR, .status = 400,
        .detail = "Duplicate header: content-length",
    },
    {
        .name = "body_in_memory_at_overflow",
        .inbuf_overflow = 16,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n"
                    "0123456789abcdef")},
        .reqs = {{.method = "POST", .target = "/", .version = 11,
                  .headers = "Host: x\nContent-Length: 16\n",
                  .body = "0123456789abcdef", .ka = 1}},
    },
    {
        .name = "body_spooled_over_overflow",
        .inbuf_overflow = 16,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"
                    "0123456789abcdefghijklmnopqrstuvwxyz!@#$"),
                  P(GET11)},
        .reqs = {{.method = "POST", .target = "/", .version = 11,
                  .headers = "Host: x\nContent-Length: 40\n",
                  .body = "0123456789abcdefghijklmnopqrstuvwxyz!@#$",
                  .ka = 1, .spooled = 1},
                 {.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1}},
    },
    {
        .name = "max_body_content_length_below",
        .max_body = 10,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n"
                    "123456789")},
        .reqs = {{.method = "POST", .target = "/", .version = 11,
                  .headers = "Host: x\nContent-Length: 9\n",
                  .body = "123456789", .ka = 1}},
    },
    {
        .name = "max_body_content_length_413",
        .max_body = 10,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
                    "1234567890")},
        .tail = T_ERROR, .status = 413, .detail = "exceeds max_body of 10",
    },
    {
        .name = "content_length_overflow_413",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Content-Length: 99999999999999999999999\r\n\r\n")},
        .tail = T_ERROR, .status = 413, .detail = "exceeds max_body of 65536",
    },

    /* -- chunked bodies -- */
    {
        .name = "chunked_extensions_and_trailers",
        .parts = {P("POST /c HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "5;a=b;c=\"q\\\"x; y\"\r\nhello\r\n"
                    "3 ; name ; n2 = v2\r\nabc\r\n"
                    "A\r\n0123456789\r\n"
                    "0;last\r\nX-Trailer: 1\r\nY: two words\r\n\r\n"),
                  P(GET11)},
        .reqs = {{.method = "POST", .target = "/c", .version = 11,
                  .headers = "Host: x\nTransfer-Encoding: chunked\n",
                  .body = "helloabc0123456789", .chunked = 1, .ka = 1},
                 {.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1}},
    },
    {
        .name = "chunked_te_list_case",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: , Chunked ,\t\r\n\r\n"
                    "1\r\nz\r\n0\r\n\r\n")},
        .reqs = {{.method = "POST", .target = "/", .version = 11,
                  .headers = "Host: x\nTransfer-Encoding: , Chunked ,\n",
                  .body = "z", .chunked = 1, .ka = 1}},
    },
    {
        .name = "chunked_empty_body",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")},
        .reqs = {{.method = "POST", .target = "/", .version = 11,
                  .headers = "Host: x\nTransfer-Encoding: chunked\n",
                  .chunked = 1, .ka = 1}},
    },
    {
        .name = "chunked_incomplete",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n5\r\nhel")},
        .tail = T_CHUNKED,
    },
    {
        .name = "chunked_incomplete_in_trailers",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n")},
        .tail = T_CHUNKED,
    },
    {
        .name = "chunked_spooled_over_overflow",
        .inbuf_overflow = 8,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "6\r\nabcdef\r\n6\r\nghijkl\r\n8\r\nmnopqrst\r\n0\r\n\r\n")},
        .reqs = {{.method = "POST", .target = "/", .version = 11,
                  .headers = "Host: x\nTransfer-Encoding: chunked\n",
                  .body = "abcdefghijklmnopqrst", .chunked = 1, .ka = 1,
                  .spooled = 1}},
    },
    {
        .name = "chunked_bad_size",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\nzz\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Invalid chunk size",
    },
    {
        .name = "chunked_size_17_digits",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "00000000000000001\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Invalid chunk size",
    },
    {
        .name = "chunked_size_bare_lf",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Invalid chunk size",
    },
    {
        .name = "chunked_empty_extension",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Invalid chunk extension",
    },
    {
        .name = "chunked_data_not_terminated",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Chunk not properly terminated",
    },
    {
        .name = "chunked_bad_trailer",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n0\r\n: v\r\n\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Invalid trailer",
    },
    {
        .name = "chunked_chunk_size_413",
        .max_body = 10,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n")},
        .tail = T_ERROR, .status = 413, .detail = "exceeds max_body of 10",
    },
    {
        /* The bound is on the raw bytes, framing included. */
        .name = "chunked_raw_bytes_413",
        .max_body = 16,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n")},
        .tail = T_ERROR, .status = 413, .detail = "exceeds max_body of 16",
    },
    {
        /* The bound is reached in an extension, a framing error follows:
         * 413 wherever the reads end. */
        .name = "chunked_raw_bytes_413_before_bad_size",
        .max_body = 16,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "1;aaaaaaaaaaaaaaaaaaaa\r\nX\r\nZ\r\n")},
        .tail = T_ERROR, .status = 413, .detail = "exceeds max_body of 16",
    },
    {
        .name = "chunked_raw_bytes_413_in_data",
        .max_body = 16,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "E\r\n0123456789abcdXY")},
        .tail = T_ERROR, .status = 413, .detail = "exceeds max_body of 16",
    },
    {
        .name = "chunked_raw_bytes_413_before_bad_trailer",
        .max_body = 16,
        .max_header = 64,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "0\r\nT: 0123456789abcdefghijklmnopqrstuvwxyz"
                    "0123456789abcdefghijklmnopqrstuvwxyz\r\n\r\n")},
        .tail = T_ERROR, .status = 413, .detail = "exceeds max_body of 16",
    },
    {
        .name = "chunked_trailers_431",
        .max_header = 64,
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "0\r\nT: 0123456789abcdefghijklmnopqrstuvwxyz"
                    "0123456789abcdefghijklmnopqrstuvwxyz\r\n\r\n")},
        .tail = T_ERROR, .status = 431, .detail = "exceeds max_header of 64",
    },
    {
        .name = "chunked_twice",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n")},
        .tail = T_ERROR, .status = 501,
        .detail = "Transfer-Encoding is invalid. Multiple chunked encodings "
                  "requested.",
    },
    {
        .name = "transfer_encoding_gzip",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")},
        .tail = T_ERROR, .status = 501,
        .detail = "Transfer-Encoding requested is not supported.",
    },
    {
        .name = "transfer_encoding_and_content_length",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Content-Length and Transfer-Encoding are both present",
        .err_close = 1,
    },
    {
        .name = "transfer_encoding_http10",
        .parts = {P("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "0\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Transfer-Encoding is not allowed in HTTP/1.0 requests",
        .err_close = 1,
    },

    /* -- limits on the head -- */
    {
        /* The head (blank lines not counted) must be shorter than
         * max_header: 63 bytes pass, 64 do not. */
        .name = "max_header_below",
        .max_header = 64,
        .parts = {P("\r\nGET / HTTP/1.1\r\nHost: x\r\n"
                    "X: 0123456789abcdefghijklmnopqrstu\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = "Host: x\nX: 0123456789abcdefghijklmnopqrstu\n",
                  .ka = 1}},
    },
    {
        .name = "max_header_431",
        .max_header = 64,
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\n"
                    "X: 0123456789abcdefghijklmnopqrstuv\r\n\r\n")},
        .tail = T_ERROR, .status = 431, .detail = "exceeds max_header of 64",
    },
    {
        .name = "max_header_431_no_line_end",
        .max_header = 64,
        .parts = {P("GET /0123456789abcdefghijklmnopqrstuvwxyz"
                    "0123456789abcdefghijklmnopqrstuvwxyz")},
        .tail = T_ERROR, .status = 431, .detail = "exceeds max_header of 64",
    },

    /* -- line ends and empty lines -- */
    {
        .name = "bare_lf_request_line",
        .parts = {P("GET / HTTP/1.1\nHost: x\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Bare CR or LF found in HTTP message",
    },
    {
        .name = "bare_cr_request_line",
        .parts = {P("GET / HTTP/1.1\rHost: x\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Bare CR or LF found in HTTP message",
    },
    {
        .name = "bare_lf_header_line",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Bare CR or LF found in header line \"X-A: a\nb\"",
        .quote_split = 1,
    },
    {
        .name = "bare_lf_ends_head",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\n\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Bare CR or LF found in header line \"\n\"",
    },
    {
        .name = "bare_cr_header_line",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Bare CR or LF found in header line \"X-A: a\rb\"",
    },
    {
        .name = "empty_lines_8_allowed",
        .parts = {P("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n" GET11)},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1}},
    },
    {
        .name = "empty_lines_bare_lf_16_allowed",
        .parts = {P("\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n" GET11)},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1}},
    },
    {
        .name = "empty_lines_9_400",
        .parts = {P("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n" GET11)},
        .tail = T_ERROR, .status = 400,
        .detail = "Too many empty lines before the request line",
    },
    {
        .name = "empty_lines_9_after_a_request_400",
        .parts = {P(GET11),
                  P("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = H11, .ka = 1}},
        .tail = T_ERROR, .status = 400,
        .detail = "Too many empty lines before the request line",
    },
    {
        .name = "empty_lines_only",
        .parts = {P("\r\n\r\n\r\n")},
        .tail = T_HEAD,
    },
    {
        .name = "obs_fold",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Malformed header line \" b\"",
    },
    {
        .name = "whitespace_before_first_field",
        .parts = {P("GET / HTTP/1.1\r\n Host: x\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Malformed header line \" Host: x\"",
    },
    {
        .name = "space_before_colon",
        .parts = {P("GET / HTTP/1.1\r\nHost : x\r\n\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Invalid header",
    },

    /* -- request line -- */
    {
        .name = "lowercase_method",
        .parts = {P("get / HTTP/1.1\r\nHost: x\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "Malformed HTTP method \"get\"",
    },
    {
        .name = "http09_form",
        .parts = {P("GET /\r\n\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Start line is invalid",
    },
    {
        .name = "http_version_2",
        .parts = {P("GET / HTTP/2.0\r\nHost: x\r\n\r\n")},
        .tail = T_ERROR, .status = 505, .detail = "HTTP version not supported",
    },
    {
        .name = "non_ascii_target",
        .parts = {P("GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Bad URI",
    },
    {
        .name = "asterisk_not_options",
        .parts = {P("GET * HTTP/1.1\r\nHost: x\r\n\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Bad URI",
    },

    /* -- Host -- */
    {
        .name = "http11_no_host",
        .parts = {P("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")},
        .tail = T_ERROR, .status = 400,
        .detail = "No Host header in an HTTP/1.1 request",
    },
    {
        .name = "http11_two_hosts",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n")},
        .tail = T_ERROR, .status = 400, .detail = "Duplicate header: host",
    },

    /* -- keep-alive -- */
    {
        .name = "http10_closes_by_default",
        .parts = {P("GET / HTTP/1.0\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/", .version = 10, .ka = 0}},
    },
    {
        .name = "http10_keep_alive_pipelined",
        .parts = {P("GET /1 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"),
                  P("POST /2 HTTP/1.0\r\nConnection: keep-alive\r\n"
                    "Content-Length: 2\r\n\r\nok"),
                  P("GET /3 HTTP/1.0\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/1", .version = 10,
                  .headers = "Connection: Keep-Alive\n", .ka = 1},
                 {.method = "POST", .target = "/2", .version = 10,
                  .headers = "Connection: keep-alive\nContent-Length: 2\n",
                  .body = "ok", .ka = 1},
                 {.method = "GET", .target = "/3", .version = 10, .ka = 0}},
    },
    {
        .name = "http10_keep_alive_and_close",
        .parts = {P("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/", .version = 10,
                  .headers = "Connection: keep-alive, close\n", .ka = 0}},
    },
    {
        .name = "http11_connection_close",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, CLOSE"
                    "\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = "Host: x\nConnection: Upgrade, CLOSE\n",
                  .ka = 0}},
    },

    /* -- Expect -- */
    {
        .name = "expect_100_continue",
        .parts = {P("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n"
                    "Content-Length: 2\r\n\r\nhi")},
        .reqs = {{.method = "POST", .target = "/", .version = 11,
                  .headers = "Host: x\nExpect: 100-Continue\n"
                             "Content-Length: 2\n",
                  .body = "hi", .ka = 1, .expect = 1}},
    },
    {
        .name = "expect_100_continue_http10_ignored",
        .parts = {P("POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
                    "Content-Length: 2\r\n\r\nhi")},
        .reqs = {{.method = "POST", .target = "/", .version = 10,
                  .headers = "Expect: 100-continue\nContent-Length: 2\n",
                  .body = "hi", .ka = 0, .expect = 0}},
    },
    {
        .name = "expect_other_value",
        .parts = {P("GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n")},
        .reqs = {{.method = "GET", .target = "/", .version = 11,
                  .headers = "Host: x\nExpect: 200-ok\n", .ka = 1}},
    },
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* ---- checking ------------------------------------------------------------ */

static const char *tmpdir = "";

typedef struct {
    char *buf;
    size_t len, cap;
} str_t;

static void
str_add(str_t *s, const char *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        s->buf = realloc(s->buf, cap);
        if (s->buf == NULL)
            abort();
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

/* Bytes as a C string literal would show them, at most 120 of them. */
static const char *
esc(const char *p, size_t n, char *out, size_t outsz)
{
    size_t o = 0;
    if (p == NULL) {
        snprintf(out, outsz, "(null)");
        return out;
    }
    out[o++] = '"';
    for (size_t i = 0; i < n && o + 8 < outsz; i++) {
        unsigned char c = (unsigned char)p[i];
        if (i == 120) {
            o += (size_t)snprintf(out + o, outsz - o, "...");
            break;
        }
        if (c == '\r')
            o += (size_t)snprintf(out + o, outsz - o, "\\r");
        else if (c == '\n')
            o += (size_t)snprintf(out + o, outsz - o, "\\n");
        else if (c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, outsz - o, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

typedef struct {
    char *why;
    size_t whysz;
} msg_t;

static int __attribute__((format(printf, 2, 3)))
fail(msg_t *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->why, m->whysz, fmt, ap);
    va_end(ap);
    return -1;
}

static int
same_span(const char *got, size_t glen, const char *want)
{
    if (got == NULL || want == NULL)
        return got == NULL && want == NULL;
    return glen == strlen(want) && memcmp(got, want, glen) == 0;
}

#define CHECK_SPAN(field, want)                                              \
    do {                                                                     \
        if (!same_span(r->field, r->field##_len, (want))) {                  \
            char a[400], b[400];                                             \
            return fail(m, "request %d: " #field " %s, want %s", i,          \
                        esc(r->field, r->field##_len, a, sizeof(a)),         \
                        esc((want), (want) ? strlen(want) : 0, b,            \
                            sizeof(b)));                                     \
        }                                                                    \
    } while (0)

#define CHECK_FLAG(field, want)                                              \
    do {                                                                     \
        if ((unsigned)r->field != (unsigned)(want))                          \
            return fail(m, "request %d: " #field " %u, want %u", i,          \
                        (unsigned)r->field, (unsigned)(want));               \
    } while (0)

/* The body as stored: the spool's memory, or its temp file. */
static int
read_body(const wc_request_t *r, str_t *out, msg_t *m)
{
    if (r->body.fd < 0) {
        if (r->body.mem.len != r->body.len)
            return fail(m, "spool: %zu bytes in memory, len %llu",
                        r->body.mem.len, (unsigned long long)r->body.len);
        str_add(out, r->body.mem.data ? r->body.mem.data : "", r->body.len);
        return 0;
    }
    char buf[4096];
    off_t off = 0;
    for (;;) {
        ssize_t k = pread(r->body.fd, buf, sizeof(buf), off);
        if (k < 0)
            return fail(m, "spool: pread failed");
        if (k == 0)
            break;
        str_add(out, buf, (size_t)k);
        off += k;
    }
    if ((uint64_t)off != r->body.len)
        return fail(m, "spool: %lld bytes in the temp file, len %llu",
                    (long long)off, (unsigned long long)r->body.len);
    return 0;
}

/* A complete request against the i-th expected one. */
static int
check_request(const exp_req_t *e, int i, wc_request_t *r, msg_t *m)
{
    char a[400], b[400];
    CHECK_SPAN(method, e->method);
    CHECK_SPAN(target, e->target);
    if (e->path)
        CHECK_SPAN(path, e->path);
    CHECK_SPAN(query, e->query);
    CHECK_SPAN(authority, e->authority);
    if (r->version != e->version)
        return fail(m, "request %d: version %d, want %d", i, r->version,
                    e->version);

    str_t h = {0};
    str_add(&h, "", 0);
    for (uint32_t k = 0; k < r->nheaders; k++) {
        str_add(&h, r->headers[k].name, r->headers[k].name_len);
        str_add(&h, ": ", 2);
        str_add(&h, r->headers[k].value, r->headers[k].value_len);
        str_add(&h, "\n", 1);
    }
    const char *want = e->headers ? e->headers : "";
    if (strcmp(h.buf, want) != 0) {
        fail(m, "request %d: headers %s, want %s", i,
             esc(h.buf, h.len, a, sizeof(a)),
             esc(want, strlen(want), b, sizeof(b)));
        free(h.buf);
        return -1;
    }
    free(h.buf);

    str_t body = {0};
    str_add(&body, "", 0);
    if (read_body(r, &body, m) < 0) {
        free(body.buf);
        return -1;
    }
    want = e->body ? e->body : "";
    if (body.len != strlen(want) || memcmp(body.buf, want, body.len) != 0) {
        fail(m, "request %d: body %s, want %s", i,
             esc(body.buf, body.len, a, sizeof(a)),
             esc(want, strlen(want), b, sizeof(b)));
        free(body.buf);
        return -1;
    }
    free(body.buf);
    if (!r->chunked && r->content_length >= 0
        && r->body.len != (uint64_t)r->content_length)
        return fail(m, "request %d: body of %llu bytes, Content-Length %lld",
                    i, (unsigned long long)r->body.len,
                    (long long)r->content_length);
    if ((r->body.fd >= 0) != (e->spooled != 0))
        return fail(m, "request %d: body %s, want %s", i,
                    r->body.fd >= 0 ? "in a temp file" : "in memory",
                    e->spooled ? "in a temp file" : "in memory");
    CHECK_FLAG(keep_alive, e->ka);
    CHECK_FLAG(chunked, e->chunked);
    CHECK_FLAG(close_after, e->close_after);
    CHECK_FLAG(expect_continue, e->expect);
    return 0;
}

/* detail without its closing quote is a prefix of want's. */
static int
quote_prefix(const char *got, const char *want)
{
    size_t g = strlen(got), w = strlen(want);
    if (g && got[g - 1] == '"')
        g--;
    if (w && want[w - 1] == '"')
        w--;
    return g <= w && memcmp(got, want, g) == 0;
}

static void
init_cfg(wc_config_t *cfg, const case_t *c)
{
    /* As fuzz/fuzz_request.c's init_cfg, with the case's limits. */
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_header = c->max_header ? c->max_header : 2048;
    cfg->max_body = c->max_body ? c->max_body : 65536;
    cfg->inbuf_overflow = c->inbuf_overflow ? c->inbuf_overflow : 1024;
    snprintf(cfg->tmpdir, sizeof(cfg->tmpdir), "%s", tmpdir);
}

/* Feed `in` in reads of the given sizes (the last one takes the rest), as
 * channel.c does, and compare with the case.  exact: the error detail
 * must match exactly (else, for quote_split cases, a prefix will do). */
static int
run(const case_t *c, const char *in, size_t len, const size_t *reads,
    int nreads, int exact, msg_t *m)
{
    wc_config_t cfg;
    init_cfg(&cfg, c);
    size_t ends[MAX_PARTS];
    int nparts = 0, nexp = 0;
    size_t acc = 0;
    for (; nparts < MAX_PARTS && c->parts[nparts].s; nparts++) {
        acc += c->parts[nparts].n;
        ends[nparts] = acc;
    }
    while (nexp < MAX_REQS && c->reqs[nexp].method)
        nexp++;

    wc_request_t *r = NULL;
    int nreq = 0, rc = 0;
    size_t pos = 0;
    for (int ri = 0; ri < nreads && pos < len; ri++) {
        size_t left = ri == nreads - 1 || reads[ri] > len - pos
                          ? len - pos : reads[ri];
        const char *p = in + pos;
        while (left > 0) {
            if (r == NULL) {
                r = wc_request_new(cfg.inbuf_overflow);
                if (r == NULL)
                    abort();
            }
            size_t used = (size_t)-1;
            int rv = wc_request_feed(r, p, left, &used, &cfg);
            if (used > left) {
                rc = fail(m, "used %zu of %zu bytes", used, left);
                goto out;
            }
            p += used;
            pos += used;
            left -= used;
            if (rv == WC_FEED_ERROR) {
                if (!r->error_status) {
                    rc = fail(m, "WC_FEED_ERROR without an error status");
                    goto out;
                }
                goto ended;
            }
            if (r->error_status) {
                rc = fail(m, "error status %d without WC_FEED_ERROR",
                          r->error_status);
                goto out;
            }
            if (rv == WC_FEED_MORE) {
                if (left != 0) {
                    rc = fail(m, "WC_FEED_MORE with %zu bytes left", left);
                    goto out;
                }
                if (r->pstate == WC_PARSE_DONE) {
                    rc = fail(m, "WC_FEED_MORE in WC_PARSE_DONE");
                    goto out;
                }
                break;
            }
            if (rv != WC_FEED_DONE) {
                rc = fail(m, "wc_request_feed returned %d", rv);
                goto out;
            }
            if (r->pstate != WC_PARSE_DONE) {
                rc = fail(m, "WC_FEED_DONE in pstate %d", r->pstate);
                goto out;
            }
            if (nreq >= nexp) {
                rc = fail(m, "request %d complete at %zu, want %d requests",
                          nreq, pos, nexp);
                goto out;
            }
            if (pos != ends[nreq]) {
                rc = fail(m, "request %d ended at %zu, want %zu", nreq, pos,
                          ends[nreq]);
                goto out;
            }
            if (check_request(&c->reqs[nreq], nreq, r, m) < 0) {
                rc = -1;
                goto out;
            }
            nreq++;
            wc_request_free(r);
            r = NULL;
        }
    }

ended:
    if (nreq != nexp) {
        if (r && r->error_status)
            rc = fail(m, "%d requests, want %d; then error %d %s", nreq, nexp,
                      r->error_status, r->error_detail);
        else
            rc = fail(m, "%d requests, want %d", nreq, nexp);
        goto out;
    }
    if (r && r->error_status) {
        char a[400], b[400];
        const char *d = r->error_detail ? r->error_detail : "(null)";
        if (c->tail != T_ERROR) {
            rc = fail(m, "error %d %s, want %s", r->error_status,
                      esc(d, strlen(d), a, sizeof(a)), tail_names[c->tail]);
            goto out;
        }
        int same_detail = strcmp(d, c->detail) == 0
                          || (!exact && c->quote_split
                              && quote_prefix(d, c->detail));
        if (r->error_status != c->status || !same_detail) {
            rc = fail(m, "error %d %s, want %d %s", r->error_status,
                      esc(d, strlen(d), a, sizeof(a)), c->status,
                      esc(c->detail, strlen(c->detail), b, sizeof(b)));
            goto out;
        }
        if (r->close_after != c->err_close) {
            rc = fail(m, "error request: close_after %u, want %u",
                      (unsigned)r->close_after, c->err_close);
            goto out;
        }
        goto out;
    }
    if (pos != len) {
        rc = fail(m, "stopped at %zu of %zu bytes", pos, len);
        goto out;
    }
    int tail = T_END;
    if (r) {
        switch (r->pstate) {
        case WC_PARSE_HEAD: tail = T_HEAD; break;
        case WC_PARSE_BODY: tail = T_BODY; break;
        case WC_PARSE_CHUNKED: tail = T_CHUNKED; break;
        default:
            rc = fail(m, "pending request in pstate %d", r->pstate);
            goto out;
        }
    }
    if (tail != c->tail)
        rc = fail(m, "input ended: %s, want %s", tail_names[tail],
                  tail_names[c->tail]);
out:
    wc_request_free(r);
    return rc;
}

/* One case: whole, its own reads, every two-way split, byte by byte. */
static int
run_case(const case_t *c, char *why, size_t whysz)
{
    char *in = NULL;
    size_t len = 0;
    int nparts = 0;
    for (; nparts < MAX_PARTS && c->parts[nparts].s; nparts++)
        len += c->parts[nparts].n;
    int nexp = 0;
    while (nexp < MAX_REQS && c->reqs[nexp].method)
        nexp++;
    msg_t m = {why, whysz};
    /* The table itself: the parts after the requests are the tail. */
    if (nparts < nexp || (c->tail == T_END) != (nparts == nexp)
        || (c->tail == T_ERROR && c->detail == NULL) || len == 0)
        return fail(&m, "bad case: %d parts, %d requests, tail %s", nparts,
                    nexp, tail_names[c->tail]);
    in = malloc(len);
    if (in == NULL)
        abort();
    len = 0;
    for (int i = 0; i < nparts; i++) {
        memcpy(in + len, c->parts[i].s, c->parts[i].n);
        len += c->parts[i].n;
    }

    char sub[1024];
    msg_t sm = {sub, sizeof(sub)};
    int rc = 0;
    size_t whole[1] = {len};
    if (run(c, in, len, whole, 1, 1, &sm) < 0) {
        rc = fail(&m, "one read: %s", sub);
        goto done;
    }
    if (c->reads[0]) {
        int n = 0;
        while (n < MAX_READS && c->reads[n])
            n++;
        if (run(c, in, len, c->reads, n, 0, &sm) < 0) {
            rc = fail(&m, "the case's reads: %s", sub);
            goto done;
        }
    }
    for (size_t k = 1; k < len; k++) {
        size_t two[2] = {k, len - k};
        if (run(c, in, len, two, 2, 0, &sm) < 0) {
            rc = fail(&m, "reads of %zu + %zu: %s", k, len - k, sub);
            goto done;
        }
    }
    size_t *ones = malloc(len * sizeof(*ones));
    if (ones == NULL)
        abort();
    for (size_t k = 0; k < len; k++)
        ones[k] = 1;
    if (run(c, in, len, ones, (int)len, 0, &sm) < 0)
        rc = fail(&m, "byte by byte: %s", sub);
    free(ones);
done:
    free(in);
    return rc;
}

int
main(int argc, char **argv)
{
    if (argc > 1)
        tmpdir = argv[1];
    int passed = 0, failed = 0;
    for (size_t i = 0; i < NCASES; i++) {
        char why[1400];
        if (run_case(&cases[i], why, sizeof(why)) == 0) {
            printf("ok %s\n", cases[i].name);
            passed++;
        } else {
            printf("FAIL %s: %s\n", cases[i].name, why);
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
