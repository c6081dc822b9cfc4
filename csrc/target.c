/* target.c: splits a request target (RFC 9112 3.2) into the path, query
 * and authority spans of wc_request_t: origin-form "/p?q", absolute-form
 * "scheme://authority/p?q#f" (the authority replaces Host), authority-form
 * "host:port" for CONNECT, and "*" for OPTIONS.  Every span is measured in
 * size_t: a target may be as long as max_request_header_size allows.
 *
 * The grammar accepted for absolute- and authority-form is the one of the
 * system http_parser_parse_url, which parser.c used to call; its
 * uint16 offsets mis-split targets over 64 KiB (the fuzz driver checks
 * the two agree below that).
 *
 * GIL map: loop thread, no GIL.  Nothing here touches Python.
 */
#include "loop.h"

#include <string.h>

const char wc_slash[] = "/";

static int
is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* userinfo = *( unreserved / pct-encoded / sub-delims / ":" ), RFC 3986
 * 3.2.1 ("%" is not checked for two hex digits, as before). */
static int
is_userinfo(unsigned char c)
{
    return is_alnum(c) || (c != 0 && strchr("-_.!~*'()%;:&=+$,", c) != NULL);
}

/* A reg-name as lax http-parser builds read it: letters, digits, "-", "."
 * and "_". */
static int
is_hostchar(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_';
}

static int
is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* Check an authority: [ userinfo "@" ] host [ ":" port ], where host is a
 * reg-name or an IP literal "[" (hex / ":" / ".")+ [ "%" zone ] "]" and
 * port is 1 or more digits up to 65535.  Userinfo only when `userinfo`;
 * then *skip is its length with the "@" (0 without), else the host's length
 * without the port.  Returns 0 or -1.  The grammar is the one the system
 * http_parser_parse_url applied, whose uint16 offsets we cannot use. */
static int
split_authority(const char *a, size_t n, int userinfo, size_t *skip)
{
    const unsigned char *p = (const unsigned char *)a;
    const unsigned char *end = p + n;
    const unsigned char *at = memchr(p, '@', n);

    *skip = 0;
    if (at) {
        if (!userinfo)
            return -1;
        for (const unsigned char *u = p; u < at; u++)
            if (!is_userinfo(*u))
                return -1;
        p = at + 1;
        *skip = (size_t)(p - (const unsigned char *)a);
    }
    const unsigned char *host = p;
    if (p < end && *p == '[') {
        p++;
        const unsigned char *lit = p;
        while (p < end && (is_hex(*p) || *p == ':' || *p == '.'))
            p++;
        if (p == lit)
            return -1;
        if (p < end && *p == '%') {
            const unsigned char *zone = ++p;
            while (p < end && (is_alnum(*p) || *p == '%' || *p == '.'
                               || *p == '-' || *p == '_' || *p == '~'))
                p++;
            if (p == zone)
                return -1;
        }
        if (p == end || *p != ']')
            return -1;
        p++;
    } else {
        while (p < end && is_hostchar(*p))
            p++;
        if (p == host)
            return -1;
    }
    if (!userinfo)
        *skip = (size_t)(p - host);
    if (p == end)
        return 0;
    if (*p != ':' || ++p == end)
        return -1;
    unsigned long port = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        port = port * 10 + (unsigned long)(*p - '0');
        if (port > 65535)
            return -1;
    }
    return 0;
}

int
wc_parse_target(wc_request_t *r)
{
    const char *t = r->target;
    size_t n = r->target_len;
    if (t[0] == '/') {
        const char *q = memchr(t, '?', n);
        const char *f = memchr(t, '#', n);
        if (f && q && f < q)
            q = NULL;
        const char *pend = q ? q : (f ? f : t + n);
        r->path = t;
        r->path_len = (uint32_t)(pend - t);
        if (q) {
            const char *qend = f ? f : t + n;
            r->query = q + 1;
            r->query_len = (uint32_t)(qend - q - 1);
        }
        return 0;
    }
    if (n == 1 && t[0] == '*') {
        if (!(r->method_len == 7 && memcmp(r->method, "OPTIONS", 7) == 0)) {
            wc_request_error(r, 400, "Bad URI");
            return -1;
        }
        r->path = t;
        r->path_len = 1;
        return 0;
    }
    int is_connect = r->method_len == 7 && memcmp(r->method, "CONNECT", 7) == 0;
    if (is_connect) {
        /* authority-form (RFC 9112 3.2.3): uri-host ":" port, nothing
         * else; PATH_INFO is the target as sent. */
        size_t hlen;
        if (split_authority(t, n, 0, &hlen) < 0 || hlen == n) {
            wc_request_error(r, 400, "Bad URI");
            return -1;
        }
        r->authority = t;
        r->authority_len = (uint32_t)n;
        r->path = t;
        r->path_len = (uint32_t)n;
        return 0;
    }
    /* absolute-form (RFC 9112 3.2.2): scheme "://" authority, then an
     * optional path, "?" query and "#" fragment.  The authority replaces
     * Host.  Every span is a size_t: targets may be far over 64 KiB. */
    size_t i = 0;
    while (i < n && ((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z'))
        i++;
    if (i == 0 || n - i < 3 || memcmp(t + i, "://", 3) != 0) {
        wc_request_error(r, 400, "Bad URI");
        return -1;
    }
    const char *a = t + i + 3, *end = t + n;
    const char *aend = a;
    while (aend < end && *aend != '/' && *aend != '?')
        aend++;
    size_t skip;
    if (split_authority(a, (size_t)(aend - a), 1, &skip) < 0) {
        wc_request_error(r, 400, "Bad URI");
        return -1;
    }
    r->authority = a + skip;
    r->authority_len = (uint32_t)(aend - a - skip);
    const char *hash = memchr(aend, '#', (size_t)(end - aend));
    if (hash)
        end = hash;     /* the fragment is the client's business */
    const char *q = memchr(aend, '?', (size_t)(end - aend));
    const char *pend = q ? q : end;
    if (pend > aend) {
        r->path = aend;
        r->path_len = (uint32_t)(pend - aend);
    } else {
        r->path = wc_slash;     /* RFC 9112 3.2.2: an empty path is "/" */
        r->path_len = 1;
    }
    if (q && end > q + 1) {
        r->query = q + 1;
        r->query_len = (uint32_t)(end - q - 1);
    }
    return 0;
}
