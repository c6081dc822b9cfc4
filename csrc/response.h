/* response.h: the HTTP/1 response of one request, shared by response.c
 * (framing, head, body, error pages, file bodies), wsgi.c (the driver)
 * and start_response.c (write()).  Worker threads, GIL held.
 */
#ifndef WC_RESPONSE_H
#define WC_RESPONSE_H

#include "wc.h"

typedef struct response_s {
    wc_worker_t *w;
    wc_channel_t *ch;
    ServerObject *so;
    StartResponseObject *sr;
    PyObject *path;
    int version;
    int is_head;
    int req_keep_alive;
    int has_body;
    int keep_alive;
    int chunked;
    int64_t cl;             /* framing Content-Length, -1 if none */
    uint64_t sent;          /* body bytes handed to the connection
                               (before framing) */
    uint64_t gathered;      /* of which in iovecs not yet sent */
    int failed;             /* the client is gone */
    int status;             /* status code sent, 0 before the head */
    int warned_long;
    int warned_nobody;
    struct iovec iov[WC_IOV_MAX];
    void *owners[WC_IOV_MAX];   /* the bytes object of iov[i], or NULL */
    int niov;
    char hex[WC_IOV_MAX / 2][20];
    int nhex;
} response_t;

/* Decide the framing and write the status line and headers.  `known_len`
 * is the whole body's length when the server knows it (-1 otherwise). */
int wc_response_head(response_t *r, int64_t known_len) WC_RAISES_NEG;
/* Queue body bytes; the memory must live until the next flush.  `owner`
 * is the exact bytes object they belong to, or NULL: then what the socket
 * does not take is copied. */
int wc_response_body(response_t *r, const char *p, size_t n,
                     PyObject *owner);
/* The body bytes to log: those handed to the connection, less what a
 * connection the client has left still held unsent. */
uint64_t wc_response_taken(response_t *r);
/* Send what was gathered; -1 when the client is gone (r->failed). */
int wc_response_flush(response_t *r, int defer);
/* A FileWrapper result: 1 sent, 0 not one we size, -1 error. */
int wc_response_file(response_t *r, PyObject *result);
/* The app's part is over: later write()s raise; wait for those running. */
void wc_response_end_writes(response_t *r);
/* The last chunk, or the Content-Length check; sets *close. */
int wc_response_finish(response_t *r, int *close) WC_RAISES_NEG;

#endif /* WC_RESPONSE_H */
