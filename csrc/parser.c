/* parser.c: turns bytes into wc_request_t.  The only file that includes
 * http_parser.h.
 *
 * http-parser 2.9 (Debian's build is the lax one) tokenizes the header
 * section and checks Content-Length / Transfer-Encoding framing; on top of
 * it we apply what RFC 9112 requires and it lets through: CRLF only, no
 * obs-fold, token field names, no CTLs in values, a strict request line,
 * exactly one Host on HTTP/1.1, no duplicate Content-Length / Content-Type,
 * digits-only Content-Length, Transfer-Encoding only "chunked", no
 * Transfer-Encoding on HTTP/1.0.  Chunked bodies are decoded here, not by
 * http-parser, whose lax chunk parser swallows bad framing.  The request
 * target is split by target.c.
 *
 * GIL map: loop thread, no GIL.  Nothing here touches Python.
 */
#include "loop.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHUNK_EXT 4096
#define HP_SLICE 4096      /* see http_parser_check */

/* tchar per RFC 9110 5.6.2 */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};
/* start_response.c checks the app's header names with it too. */
const unsigned char *const wc_tchar = tchar;

static int
is_vchar_or_obs(unsigned char c)
{
    return (c > 0x20 && c != 0x7f);
}

static int
ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    if (alen != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

static int
on_headers_complete(http_parser *p)
{
    /* Stop here: bodies are framed by us. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings hp_settings = {
    .on_headers_complete = on_headers_complete,
};

wc_request_t *
wc_request_new(size_t inbuf_overflow)
{
    wc_request_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->content_length = -1;
    r->version = 0;
    wc_spool_init(&r->body, inbuf_overflow);
    return r;
}

void
wc_request_free(wc_request_t *r)
{
    if (r == NULL)
        return;
    wc_buf_free(&r->head);
    free(r->headers);
    wc_spool_free(&r->body);
    wc_tls_info_unref(r->tls);
    free(r);
}

void
wc_request_error(wc_request_t *r, int status, const char *detail)
{
    if (r->error_status)
        return;     /* the first error wins */
    r->error_status = status;
    r->error_detail = detail;
}

void
wc_request_errorf(wc_request_t *r, int status, const char *fmt,
                  const char *arg, size_t alen)
{
    if (r->error_status)
        return;
    if (alen > 80)
        alen = 80;
    snprintf(r->detail_buf, sizeof(r->detail_buf), fmt, (int)alen, arg);
    r->error_status = status;
    r->error_detail = r->detail_buf;
}

static int
add_header(wc_request_t *r, const char *name, size_t nlen, const char *value,
           size_t vlen)
{
    if (r->nheaders == r->headers_cap) {
        uint32_t cap = r->headers_cap ? r->headers_cap * 2 : 16;
        wc_header_t *h = realloc(r->headers, cap * sizeof(*h));
        if (h == NULL)
            return -1;
        r->headers = h;
        r->headers_cap = cap;
    }
    wc_header_t *h = &r->headers[r->nheaders++];
    h->name = name;
    h->name_len = (uint32_t)nlen;
    h->value = value;
    h->value_len = (uint32_t)vlen;
    return 0;
}

/* Find the end of the head in new bytes.  Every LF must follow a CR (a
 * bare LF is refused at once, not waited on).  Returns the bytes of p that
 * belong to the head, and sets *complete. */
size_t
wc_head_scan(wc_request_t *r, const char *p, size_t n, int *complete,
             const wc_config_t *cfg)
{
    size_t used = 0;
    *complete = 0;

    /* Empty lines before a request are ignored (RFC 9112 2.2: at least
     * one must be).  A few are plenty: more is a client holding the
     * connection with line ends, and is refused. */
    if (r->head.len == 0) {
        while (used < n && (p[used] == '\r' || p[used] == '\n')) {
            if (++r->blank > WC_MAX_BLANK) {
                wc_request_error(r, 400, "Too many empty lines before the "
                                         "request line");
                return used + 1;
            }
            used++;
        }
        if (used == n)
            return used;
    }
    while (used < n) {
        const char *s = p + used;
        const char *lf = memchr(s, '\n', n - used);
        size_t take = lf ? (size_t)(lf - s) + 1 : n - used;
        if (r->head.len + take >= cfg->max_header) {
            snprintf(r->detail_buf, sizeof(r->detail_buf),
                     "exceeds max_header of %zu", cfg->max_header);
            wc_request_error(r, 431, r->detail_buf);
            return used + take;
        }
        if (wc_buf_append(&r->head, s, take) < 0) {
            wc_request_error(r, 500, "Out of memory");
            return used + take;
        }
        used += take;
        if (lf == NULL)
            break;
        size_t end = r->head.len;
        if (end < 2 || r->head.data[end - 2] != '\r') {
            if (r->line_start == 0) {
                wc_request_error(r, 400, "Bare CR or LF found in HTTP "
                                         "message");
                return used;
            }
            /* Quote the line up to its CRLF, as far as it is here (a
             * read may end before the CRLF, or between its CR and LF: that
             * CR is left out too). */
            const char *rest = p + used, *stop = p + n;
            const char *q = rest;
            while (q + 1 < stop && !(q[0] == '\r' && q[1] == '\n'))
                q++;
            if (q + 1 >= stop) {
                q = stop;
                if (q > rest && q[-1] == '\r')
                    q--;
            }
            size_t k = (size_t)(q - rest);
            if (wc_buf_append(&r->head, rest, k) < 0)
                k = 0;
            wc_request_errorf(r, 400, "Bare CR or LF found in header line "
                                      "\"%.*s\"",
                              r->head.data + r->line_start,
                              r->head.len - r->line_start);
            return used + k;
        }
        if (end - r->line_start == 2) {
            *complete = 1;
            return used;
        }
        r->line_start = end;
    }
    return used;
}

/* Parse "METHOD SP target SP HTTP/d.d".  Returns 0 or sets an error. */
static int
parse_request_line(wc_request_t *r, const char *p, size_t n)
{
    const char *end = p + n;
    const char *s = p;
    int lower = 0;

    while (p < end && tchar[(unsigned char)*p]) {
        if (*p >= 'a' && *p <= 'z')
            lower = 1;
        p++;
    }
    if (p == s || p == end || *p != ' ') {
        wc_request_error(r, 400, "Start line is invalid");
        return -1;
    }
    if (lower) {
        wc_request_errorf(r, 400, "Malformed HTTP method \"%.*s\"", s,
                       (size_t)(p - s));
        return -1;
    }
    r->method = s;
    r->method_len = (uint32_t)(p - s);
    s = ++p;
    int bad_uri = 0;
    while (p < end && *p != ' ') {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x80) {
            bad_uri = 1;    /* reported once the version is known */
        } else if (c <= 0x20 || c == 0x7f) {
            wc_request_error(r, 400, "Start line is invalid");
            return -1;
        }
        p++;
    }
    if (p == s) {
        wc_request_error(r, 400, "Start line is invalid");
        return -1;
    }
    r->target = s;
    r->target_len = (uint32_t)(p - s);
    if (p == end) {
        /* "GET /": the HTTP/0.9 form, which RFC 9112 does not serve. */
        wc_request_error(r, 400, "Start line is invalid");
        return -1;
    }
    p++;
    /* Tolerate trailing whitespace after the version, as waitress does. */
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - p != 8 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0'
        || p[5] > '9' || p[6] != '.' || p[7] < '0' || p[7] > '9') {
        wc_request_error(r, 400, "Start line is invalid");
        return -1;
    }
    int v = (p[5] - '0') * 10 + (p[7] - '0');
    if (v != 10 && v != 11) {
        r->version = 10;  /* answer in a version the client can read */
        wc_request_error(r, 505, "HTTP version not supported");
        return -1;
    }
    r->version = v;
    if (bad_uri) {
        wc_request_error(r, 400, "Bad URI");
        return -1;
    }
    return 0;
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Split a comma list and call back for each trimmed, non-empty element. */
typedef int (*elem_cb)(wc_request_t *r, const char *p, size_t n, void *arg);

static int
for_each_elem(wc_request_t *r, const char *p, size_t n, elem_cb cb, void *arg)
{
    const char *end = p + n;
    while (p < end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *e = c ? c : end;
        const char *a = p, *b = e;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a && cb(r, a, (size_t)(b - a), arg) < 0)
            return -1;
        p = c ? c + 1 : end;
    }
    return 0;
}

static int
connection_token(wc_request_t *r, const char *p, size_t n, void *arg)
{
    int *flags = arg;
    if (ieq(p, n, "close"))
        *flags |= 1;
    else if (ieq(p, n, "keep-alive"))
        *flags |= 2;
    return 0;
}

static int
te_coding(wc_request_t *r, const char *p, size_t n, void *arg)
{
    int *chunked = arg;
    if (!ieq(p, n, "chunked")) {
        wc_request_error(r, 501, "Transfer-Encoding requested is not "
                                 "supported.");
        return -1;
    }
    if (*chunked) {
        wc_request_error(r, 501, "Transfer-Encoding is invalid. Multiple "
                                 "chunked encodings requested.");
        return -1;
    }
    *chunked = 1;
    return 0;
}

/* Our own pass over the header lines: RFC 9112 field syntax, collected
 * into r->headers with OWS trimmed.  `p` starts after the request line. */
static int
scan_fields(wc_request_t *r, const char *p, const char *end)
{
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        if (eol == NULL || eol + 1 >= end || eol[1] != '\n') {
            /* Quote the whole line, up to its CRLF. */
            const char *q = eol ? eol : p;
            while (q + 1 < end && !(q[0] == '\r' && q[1] == '\n'))
                q++;
            wc_request_errorf(r, 400, "Bare CR or LF found in header line "
                                   "\"%.*s\"", p, (size_t)(q - p));
            return -1;
        }
        if (eol == p)
            return 0;   /* the empty line */
        if (*p == ' ' || *p == '\t') {
            /* obs-fold (RFC 9112 5.2) or whitespace before the first
             * field (2.2): both rejected. */
            wc_request_errorf(r, 400, "Malformed header line \"%.*s\"", p,
                           (size_t)(eol - p));
            return -1;
        }
        const char *name = p;
        while (p < eol && tchar[(unsigned char)*p])
            p++;
        if (p == name || p == eol || *p != ':') {
            wc_request_error(r, 400, "Invalid header");
            return -1;
        }
        size_t nlen = (size_t)(p - name);
        p++;
        while (p < eol && (*p == ' ' || *p == '\t'))
            p++;
        const char *val = p;
        for (; p < eol; p++) {
            unsigned char c = (unsigned char)*p;
            if (!is_vchar_or_obs(c) && c != ' ' && c != '\t') {
                wc_request_error(r, 400, "Invalid header");
                return -1;
            }
        }
        const char *vend = eol;
        while (vend > val && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        if (memchr(name, '_', nlen) == NULL) {
            if (add_header(r, name, nlen, val, (size_t)(vend - val)) < 0) {
                wc_request_error(r, 500, "Out of memory");
                return -1;
            }
        }
        p = eol + 2;
    }
    return 0;
}

static int
parse_content_length(wc_request_t *r, const wc_header_t *h,
                     const wc_config_t *cfg)
{
    uint64_t v = 0;
    int big = 0;
    if (h->value_len == 0) {
        wc_request_error(r, 400, "Content-Length is invalid");
        return -1;
    }
    for (uint32_t i = 0; i < h->value_len; i++) {
        unsigned char c = (unsigned char)h->value[i];
        if (c < '0' || c > '9') {
            wc_request_error(r, 400, "Content-Length is invalid");
            return -1;
        }
        if (v > (UINT64_MAX - 9) / 10)
            big = 1;
        else
            v = v * 10 + (c - '0');
    }
    if (big || v >= cfg->max_body) {
        snprintf(r->detail_buf, sizeof(r->detail_buf),
                 "exceeds max_body of %llu",
                 (unsigned long long)cfg->max_body);
        wc_request_error(r, 413, r->detail_buf);
        return -1;
    }
    r->content_length = (int64_t)v;
    return 0;
}

/* Feed the header section to http-parser behind a fixed request line (our
 * own parser owns the request line: http-parser refuses methods it does not
 * know, which waitress serves).  Its verdict on framing is a second check. */
static int
http_parser_check(wc_request_t *r, const char *fields, size_t n)
{
    static const char line[] = "GET / HTTP/1.1\r\n";
    http_parser hp;
    http_parser_init(&hp, HTTP_REQUEST);
    http_parser_execute(&hp, &hp_settings, line, sizeof(line) - 1);
    /* http-parser's own head limit (80 KiB by default) is a process-wide
     * setting we leave alone: our limit, max_request_header_size, was
     * applied before.  It counts in hp.nread from the value it finds there
     * at each call, so the section goes in slices, each with a fresh count.
     * Once it paused or failed, further calls do nothing. */
    for (size_t off = 0; off < n; off += HP_SLICE) {
        hp.nread = 0;
        http_parser_execute(&hp, &hp_settings, fields + off,
                            n - off < HP_SLICE ? n - off : HP_SLICE);
    }
    /* Paused by on_headers_complete, or it did not accept the section. */
    if (HTTP_PARSER_ERRNO(&hp) != HPE_PAUSED) {
        wc_request_error(r, 400, "Invalid header");
        return -1;
    }
    if (r->content_length >= 0
        && (uint64_t)r->content_length != hp.content_length) {
        wc_request_error(r, 400, "Content-Length is invalid");
        return -1;
    }
    /* Transfer-Encoding is read by us alone: http-parser wants "chunked"
     * as the raw value's last token and does not drop empty list elements
     * or a trailing HTAB, which RFC 9110 5.6.1 allows. */
    return 0;
}

void
wc_parse_head(wc_request_t *r, const wc_config_t *cfg)
{
    const char *p = r->head.data;
    const char *end = p + r->head.len;
    const char *eol = memchr(p, '\r', r->head.len);

    r->body.dir = cfg->tmpdir;  /* before any body byte is stored */

    if (eol == NULL || eol[1] != '\n') {
        wc_request_error(r, 400, "Bare CR or LF found in HTTP message");
        return;
    }
    if (parse_request_line(r, p, (size_t)(eol - p)) < 0)
        return;
    if (wc_parse_target(r) < 0)
        return;
    const char *fields = eol + 2;
    if (scan_fields(r, fields, end) < 0)
        return;

    int nhost = 0, conn = 0, chunked = 0;
    const wc_header_t *cl = NULL, *ct = NULL;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const wc_header_t *h = &r->headers[i];
        switch (h->name_len) {
        case 4:
            if (ieq(h->name, 4, "host") && ++nhost > 1) {
                wc_request_errorf(r, 400, "Duplicate header: %.*s", h->name, 4);
                return;
            }
            break;
        case 6:
            if (ieq(h->name, 6, "expect") && ieq(h->value, h->value_len,
                                                 "100-continue"))
                r->expect_continue = r->version == 11;
            break;
        case 10:
            if (ieq(h->name, 10, "connection"))
                for_each_elem(r, h->value, h->value_len, connection_token,
                              &conn);
            break;
        case 12:
            if (ieq(h->name, 12, "content-type")) {
                if (ct) {
                    wc_request_errorf(r, 400, "Duplicate header: %.*s", h->name,
                                   12);
                    return;
                }
                ct = h;
            }
            break;
        case 14:
            if (ieq(h->name, 14, "content-length")) {
                if (cl) {
                    wc_request_errorf(r, 400, "Duplicate header: %.*s", h->name,
                                   14);
                    return;
                }
                cl = h;
            }
            break;
        case 17:
            if (ieq(h->name, 17, "transfer-encoding")) {
                r->has_te = 1;
                if (r->version == 10) {
                    /* RFC 9112 6.1: faulty framing on 1.0; never let a
                     * chunked body be read as the next request. */
                    wc_request_error(r, 400, "Transfer-Encoding is not "
                                             "allowed in HTTP/1.0 requests");
                    r->close_after = 1;
                    return;
                }
                if (for_each_elem(r, h->value, h->value_len, te_coding,
                                  &chunked) < 0)
                    return;
            }
            break;
        }
    }
    if (r->has_te && !chunked) {
        wc_request_error(r, 501, "Transfer-Encoding requested is not "
                                 "supported.");
        return;
    }
    if (cl && r->has_te) {
        /* RFC 9112 6.1: reject, and close whatever we answer. */
        r->close_after = 1;
        wc_request_error(r, 400, "Content-Length and Transfer-Encoding "
                                 "are both present");
        return;
    }
    if (r->version == 11 && nhost == 0) {
        wc_request_error(r, 400, "No Host header in an HTTP/1.1 request");
        return;
    }
    r->chunked = chunked;
    if (cl && parse_content_length(r, cl, cfg) < 0)
        return;
    if (http_parser_check(r, fields, (size_t)(end - fields)) < 0)
        return;

    if (r->version == 11)
        r->keep_alive = !(conn & 1);
    else
        r->keep_alive = (conn & 2) && !(conn & 1);
    if (r->content_length > 0)
        r->body_remaining = (uint64_t)r->content_length;
}

/* ---- chunked bodies ----------------------------------------------------- */

enum {
    CK_SIZE = 0,
    CK_SIZE_WS,
    CK_EXT_PRE_NAME,
    CK_EXT_NAME,
    CK_EXT_POST_NAME,
    CK_EXT_PRE_VAL,
    CK_EXT_TOKEN,
    CK_EXT_QUOTED,
    CK_EXT_QESC,
    CK_EXT_POST_VAL,
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TR_START,
    CK_TR_LINE,
    CK_TR_LF,
    CK_TR_END_LF,
};

static void
over_max_body(wc_request_t *r, const wc_config_t *cfg)
{
    snprintf(r->detail_buf, sizeof(r->detail_buf), "exceeds max_body of %llu",
             (unsigned long long)cfg->max_body);
    wc_request_error(r, 413, r->detail_buf);
}

size_t
wc_chunked_feed(wc_request_t *r, const char *buf, size_t n, int *done,
                const wc_config_t *cfg)
{
    wc_chunker_t *k = &r->chunker;
    const char *p = buf, *end = buf + n;
    *done = 0;

#define FAIL(msg)                              \
    do {                                       \
        wc_request_error(r, 400, msg);         \
        goto out;                              \
    } while (0)

    while (p < end) {
        unsigned char c = (unsigned char)*p;
        /* max_body bounds the raw bytes, framing included, and applies at
         * the byte that reaches it (not at the end of the read): the
         * answer must not depend on how the bytes arrive. */
        uint64_t raw = r->raw_body + (uint64_t)(p - buf);
        if (raw >= cfg->max_body) {
            over_max_body(r, cfg);
            goto out;
        }
        if (k->state >= CK_EXT_PRE_NAME && k->state <= CK_EXT_POST_VAL
            && ++k->ext_len > MAX_CHUNK_EXT)
            FAIL("Invalid chunk extension");
        switch (k->state) {
        case CK_SIZE: {
            int h = hexval(c);
            if (h >= 0) {
                if (++k->digits > 16)
                    FAIL("Invalid chunk size");
                k->size = (k->size << 4) | (uint64_t)h;
                break;
            }
            if (k->digits == 0)
                FAIL("Invalid chunk size");
            if (c == '\r')
                k->state = CK_SIZE_LF;
            else if (c == ';')
                k->state = CK_EXT_PRE_NAME;
            else if (c == ' ' || c == '\t')
                k->state = CK_SIZE_WS;
            else
                FAIL("Invalid chunk size");
            break;
        }
        case CK_SIZE_WS:
            /* RFC 9112 7.1.1: BWS only before a chunk extension. */
            if (c == ';')
                k->state = CK_EXT_PRE_NAME;
            else if (c != ' ' && c != '\t')
                FAIL("Invalid chunk size");
            break;
        case CK_EXT_PRE_NAME:
            /* RFC 9112 7.1.1: a chunk-ext-name must follow ";" (waitress
             * accepts "20;"; we do not). */
            if (c == ' ' || c == '\t')
                break;
            if (!tchar[c])
                FAIL("Invalid chunk extension");
            k->state = CK_EXT_NAME;
            break;
        case CK_EXT_NAME:
            if (tchar[c])
                break;
            /* fall through */
        case CK_EXT_POST_NAME:
            if (c == ' ' || c == '\t')
                k->state = CK_EXT_POST_NAME;
            else if (c == '=')
                k->state = CK_EXT_PRE_VAL;
            else if (c == ';')
                k->state = CK_EXT_PRE_NAME;
            else if (c == '\r')
                k->state = CK_SIZE_LF;
            else
                FAIL("Invalid chunk extension");
            break;
        case CK_EXT_PRE_VAL:
            if (c == ' ' || c == '\t')
                break;
            if (c == '"')
                k->state = CK_EXT_QUOTED;
            else if (tchar[c])
                k->state = CK_EXT_TOKEN;
            else
                FAIL("Invalid chunk extension");
            break;
        case CK_EXT_TOKEN:
            if (tchar[c])
                break;
            /* fall through */
        case CK_EXT_POST_VAL:
            if (c == ' ' || c == '\t')
                k->state = CK_EXT_POST_VAL;
            else if (c == ';')
                k->state = CK_EXT_PRE_NAME;
            else if (c == '\r')
                k->state = CK_SIZE_LF;
            else
                FAIL("Invalid chunk extension");
            break;
        case CK_EXT_QUOTED:
            if (c == '"')
                k->state = CK_EXT_POST_VAL;
            else if (c == '\\')
                k->state = CK_EXT_QESC;
            else if (c < 0x20 ? c != '\t' : c == 0x7f)
                FAIL("Invalid chunk extension");
            break;
        case CK_EXT_QESC:
            if (c < 0x20 ? c != '\t' : c == 0x7f)
                FAIL("Invalid chunk extension");
            k->state = CK_EXT_QUOTED;
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                FAIL("Invalid chunk size");
            k->digits = 0;
            k->ext_len = 0;
            k->state = k->size == 0 ? CK_TR_START : CK_DATA;
            if (k->size >= cfg->max_body
                || r->body.len + k->size >= cfg->max_body) {
                over_max_body(r, cfg);
                goto out;
            }
            break;
        case CK_DATA: {
            size_t take = (size_t)(end - p);
            if (take > k->size)
                take = (size_t)k->size;
            if (take > cfg->max_body - raw)
                take = (size_t)(cfg->max_body - raw);   /* 413 next */
            if (wc_spool_write(&r->body, p, take) < 0) {
                wc_request_error(r, 500, "Could not store the request "
                                         "body");
                goto out;
            }
            k->size -= take;
            p += take;
            if (k->size == 0)
                k->state = CK_DATA_CR;
            continue;
        }
        case CK_DATA_CR:
            if (c != '\r')
                FAIL("Chunk not properly terminated");
            k->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                FAIL("Chunk not properly terminated");
            k->state = CK_SIZE;
            break;
        case CK_TR_START:
            if (c == '\r') {
                k->state = CK_TR_END_LF;
                break;
            }
            if (!tchar[c])
                FAIL("Invalid trailer");
            k->state = CK_TR_LINE;
            break;
        case CK_TR_LINE:
            if (c == '\r')
                k->state = CK_TR_LF;
            else if (c < 0x20 ? c != '\t' : c == 0x7f)
                FAIL("Invalid trailer");
            break;
        case CK_TR_LF:
            if (c != '\n')
                FAIL("Invalid trailer");
            k->state = CK_TR_START;
            break;
        case CK_TR_END_LF:
            if (c != '\n')
                FAIL("Invalid trailer");
            p++;
            *done = 1;
            goto out;
        }
        if (k->state >= CK_TR_START && ++k->trailer_len >= cfg->max_header) {
            snprintf(r->detail_buf, sizeof(r->detail_buf),
                     "exceeds max_header of %zu", cfg->max_header);
            wc_request_error(r, 431, r->detail_buf);
            goto out;
        }
        p++;
    }
out:
#undef FAIL
    r->raw_body += (uint64_t)(p - buf);
    if (!r->error_status && r->raw_body >= cfg->max_body) {
        over_max_body(r, cfg);
        *done = 0;
    }
    return (size_t)(p - buf);
}

/* Step the request through head -> body (Content-Length or chunked) with
 * the bytes at p.  The one framing state machine: the loop (channel.c)
 * and the fuzzer both call it.  *used gets the bytes taken; on
 * WC_FEED_DONE the rest belongs to the next request. */
int
wc_request_feed(wc_request_t *r, const char *p, size_t n, size_t *used,
                const wc_config_t *cfg)
{
    size_t off = 0;
    int complete = 0;

    *used = 0;
    while (off < n) {
        size_t k = 0;
        switch (r->pstate) {
        case WC_PARSE_HEAD:
            k = wc_head_scan(r, p + off, n - off, &complete, cfg);
            off += k;
            if (r->error_status)
                goto error;
            if (!complete)
                goto more;
            wc_parse_head(r, cfg);
            if (r->error_status)
                goto error;
            if (r->chunked) {
                r->pstate = WC_PARSE_CHUNKED;
            } else if (r->body_remaining > 0) {
                r->pstate = WC_PARSE_BODY;
                /* One allocation for a body that stays in memory. */
                if (r->body_remaining <= cfg->inbuf_overflow
                    && wc_buf_reserve(&r->body.mem,
                                      (size_t)r->body_remaining) < 0) {
                    wc_request_error(r, 500, "Out of memory");
                    goto error;
                }
            } else {
                goto done;
            }
            break;
        case WC_PARSE_BODY:
            k = n - off < r->body_remaining ? n - off
                                            : (size_t)r->body_remaining;
            if (wc_spool_write(&r->body, p + off, k) < 0) {
                wc_request_error(r, 500, "Could not store the request body");
                goto error;
            }
            off += k;
            r->body_remaining -= k;
            if (r->body_remaining == 0)
                goto done;
            break;
        case WC_PARSE_CHUNKED:
            k = wc_chunked_feed(r, p + off, n - off, &complete, cfg);
            off += k;
            if (r->error_status)
                goto error;
            if (complete)
                goto done;
            break;
        default:
            wc_request_error(r, 500, "Request already complete");
            goto error;
        }
    }
more:
    *used = off;
    return WC_FEED_MORE;
done:
    *used = off;
    r->pstate = WC_PARSE_DONE;
    return WC_FEED_DONE;
error:
    *used = off;
    return WC_FEED_ERROR;
}
