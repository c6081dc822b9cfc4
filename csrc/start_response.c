/* start_response.c: the start_response callable handed to the app, the
 * write() callable it returns, and environ["wsgi.early_hints"].  Enforces
 * PEP 3333's rules with waitress's messages: str status and headers, no
 * CR/LF (header injection) nor any other control character but HTAB, no
 * hop-by-hop headers, a second call only with exc_info.  And what the
 * framing depends on (RFC 9110): a final status (200-599), header names
 * that are tokens, one Content-Length value of plain digits.
 *
 * GIL map: worker threads and app threads, GIL held.
 */
#include "wc.h"

#include <stdint.h>
#include <string.h>

/* What a status, header name or value must not contain: 1 for CR or LF
 * (waitress's message), 2 for another control character (NUL, DEL...:
 * RFC 9110 5.5 allows none but HTAB), 0 when clean. */
static int
bad_chars(PyObject *s)
{
    int kind = PyUnicode_KIND(s);
    const void *d = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int other = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        /* The usual case, and a clean string is all printable: one
         * compare a byte to see it. */
        const unsigned char *b = d;
        Py_ssize_t i = 0;
        while (i < n && b[i] >= 0x20 && b[i] != 0x7f)
            i++;
        if (i == n)
            return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, d, i);
        if (c == '\r' || c == '\n')
            return 1;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            other = 1;
    }
    return other ? 2 : 0;
}

/* Raise for bad characters in `what` ("status", "header name"...). */
static int
check_chars(PyObject *s, const char *what)
{
    switch (bad_chars(s)) {
    case 1:
        PyErr_Format(PyExc_ValueError, "carriage return/line feed "
                     "character present in %s", what);
        return -1;
    case 2:
        PyErr_Format(PyExc_ValueError, "control character present in %s",
                     what);
        return -1;
    }
    return 0;
}

/* A header name must be a token (RFC 9110 5.1): anything else is either
 * not the field the app meant ("Content-Length " is not Content-Length,
 * and would get framing of ours beside it) or not one at all. */
static int
check_name(PyObject *name)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    if (PyUnicode_KIND(name) == PyUnicode_1BYTE_KIND && n > 0) {
        const unsigned char *d = PyUnicode_DATA(name);
        Py_ssize_t i = 0;
        while (i < n && wc_tchar[d[i]])
            i++;
        if (i == n)
            return 0;
    }
    /* waitress's message for CR/LF, ours for other control characters. */
    if (check_chars(name, "header name") < 0)
        return -1;
    PyErr_Format(PyExc_ValueError, "header name %R is not a token "
                 "(RFC 9110 5.1)", name);
    return -1;
}

int
wc_ieq_ascii(PyObject *s, const char *lit, size_t n)
{
    if ((size_t)PyUnicode_GET_LENGTH(s) != n
        || PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND)
        return 0;
    const unsigned char *d = PyUnicode_DATA(s);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = d[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

static int
is_hop_by_hop(PyObject *name)
{
    switch (PyUnicode_GET_LENGTH(name)) {
    case 2: return WC_IEQ(name, "te");
    case 7: return WC_IEQ(name, "trailer") || WC_IEQ(name, "upgrade");
    case 10: return WC_IEQ(name, "connection") || WC_IEQ(name, "keep-alive");
    case 17: return WC_IEQ(name, "transfer-encoding");
    case 18: return WC_IEQ(name, "proxy-authenticate");
    case 19: return WC_IEQ(name, "proxy-authorization");
    default: return 0;
    }
}

/* The app's Content-Length: 1*DIGIT (RFC 9110 8.6), ASCII only, that fits
 * an int64.  Whitespace around it is not part of the field value (5.5):
 * [*start, *end) is where the digits are.  waitress's int() also took
 * "1_0", "+10" and Unicode digits, and the body was framed by a number
 * the header sent did not say.  Returns the value, or -1 with
 * ValueError. */
static int64_t
parse_content_length(PyObject *value, Py_ssize_t *start, Py_ssize_t *end)
{
    if (PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND) {
        const unsigned char *d = PyUnicode_DATA(value);
        Py_ssize_t i = 0, j = PyUnicode_GET_LENGTH(value);
        while (i < j && (d[i] == ' ' || d[i] == '\t'))
            i++;
        while (j > i && (d[j - 1] == ' ' || d[j - 1] == '\t'))
            j--;
        int64_t v = 0;
        Py_ssize_t k = i;
        for (; k < j && d[k] >= '0' && d[k] <= '9'; k++) {
            int digit = d[k] - '0';
            if (v > (INT64_MAX - digit) / 10)
                break;
            v = v * 10 + digit;
        }
        if (k == j && j > i) {
            *start = i;
            *end = j;
            return v;
        }
    }
    PyErr_Format(PyExc_ValueError, "invalid Content-Length value %R: not "
                 "1*DIGIT, or too large (RFC 9110 8.6)", value);
    return -1;
}

/* One (name, value) item of the app's headers, start_response's or
 * early_hints': a tuple of two str, no control characters, a token name,
 * not hop-by-hop.  *name and *value are borrowed from t.  Returns -1 with
 * an exception. */
static int
check_pair(PyObject *t, PyObject **name, PyObject **value)
{
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
        PyErr_Format(PyExc_AssertionError, "Header %R is not a "
                     "(name, value) tuple", t);
        return -1;
    }
    *name = PyTuple_GET_ITEM(t, 0);
    *value = PyTuple_GET_ITEM(t, 1);
    if (!PyUnicode_Check(*name)) {
        PyErr_Format(PyExc_AssertionError, "Header name %R is not a "
                     "string in %R", *name, t);
        return -1;
    }
    if (!PyUnicode_Check(*value)) {
        PyErr_Format(PyExc_AssertionError, "Header value %R is not a "
                     "string in %R", *value, t);
        return -1;
    }
    if (check_chars(*value, "header value") < 0 || check_name(*name) < 0)
        return -1;
    if (is_hop_by_hop(*name)) {
        PyErr_Format(PyExc_AssertionError, "%U is a \"hop-by-hop\" "
                     "header; it cannot be used by a WSGI application "
                     "(see PEP 3333)", *name);
        return -1;
    }
    return 0;
}

/* Check the app's headers and note Content-Length / Server / Date.
 * Returns a new list of (str, str) tuples, or NULL with an exception. */
static PyObject *
check_headers(StartResponseObject *sr, PyObject *headers)
{
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_AssertionError, "headers must be a list, not "
                     "%.80s", Py_TYPE(headers)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(headers);
    PyObject *out = PyList_New(n);
    Py_ssize_t nout = 0;
    if (out == NULL)
        return NULL;
    sr->content_length = -1;
    sr->has_server = sr->has_date = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(headers, i);    /* borrowed */
        PyObject *name, *value;                       /* borrowed */
        PyObject *pair;
        if (check_pair(t, &name, &value) < 0)
            goto error;
        Py_ssize_t start = 0, end = 0;
        switch (PyUnicode_GET_LENGTH(name)) {
        case 14:
            if (WC_IEQ(name, "content-length")) {
                int64_t v = parse_content_length(value, &start, &end);
                if (v < 0)
                    goto error;
                if (sr->content_length >= 0) {
                    if (v != sr->content_length) {
                        PyErr_Format(PyExc_ValueError, "two different "
                                     "Content-Length values: %lld and "
                                     "%lld", (long long)sr->content_length,
                                     (long long)v);
                        goto error;
                    }
                    /* The same number again: sent once (RFC 9110 8.6
                     * lets a recipient collapse the repeats). */
                    continue;
                }
                sr->content_length = v;
                if (start > 0 || end < PyUnicode_GET_LENGTH(value)) {
                    /* The header goes out as the number that frames the
                     * body, without the whitespace. */
                    PyObject *digits = PyUnicode_Substring(value, start,
                                                           end);   /* new */
                    if (digits == NULL)
                        goto error;
                    pair = PyTuple_Pack(2, name, digits);          /* new */
                    Py_DECREF(digits);
                    if (pair == NULL)
                        goto error;
                    PyList_SET_ITEM(out, nout++, pair);            /* stolen */
                    continue;
                }
            }
            break;
        case 6:
            if (WC_IEQ(name, "server"))
                sr->has_server = 1;
            break;
        case 4:
            if (WC_IEQ(name, "date"))
                sr->has_date = 1;
            break;
        }
        /* new */
        pair = PyTuple_CheckExact(t) ? Py_NewRef(t)
                                     : PyTuple_Pack(2, name, value);
        if (pair == NULL)
            goto error;
        PyList_SET_ITEM(out, nout++, pair);                        /* stolen */
    }
    if (nout < n && PyList_SetSlice(out, nout, n, NULL) < 0)
        goto error;
    return out;

error:
    Py_DECREF(out);
    return NULL;
}

/* The status must be a final one: three ASCII digits, 200 to 599, then a
 * space and the reason, or nothing (PEP 3333's "999 Message here").  A 1xx
 * sent as the answer leaves the real one to be taken for the answer to
 * the next request on the connection (RFC 9112 6.3: a 1xx ends at its
 * head); 0xx and 6xx-9xx are not HTTP status codes (RFC 9110 15), and a
 * status without its code cannot be framed.  waitress sends any string.
 * Returns -1 with ValueError. */
static int
check_status(PyObject *status)
{
    int kind = PyUnicode_KIND(status);
    const void *d = PyUnicode_DATA(status);
    Py_ssize_t n = PyUnicode_GET_LENGTH(status);
    int code = 0;
    if (n >= 3 && (n == 3 || PyUnicode_READ(kind, d, 3) == ' ')) {
        for (int i = 0; i < 3; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, d, i);
            if (c < '0' || c > '9') {
                code = -1;
                break;
            }
            code = code * 10 + (int)(c - '0');
        }
    }
    if (code >= 200 && code <= 599)
        return 0;
    if (code >= 100 && code <= 199)
        PyErr_Format(PyExc_ValueError, "status %R is an interim (1xx) "
                     "status, not a final one (interim responses: "
                     "environ[\"wsgi.early_hints\"])", status);
    else
        PyErr_Format(PyExc_ValueError, "status %R is not three digits "
                     "from 200 to 599 and a reason (RFC 9110 15)", status);
    return -1;
}

static PyObject *
sr_start_locked(StartResponseObject *sr, PyObject *status,
                PyObject *headers, PyObject *exc_info)
{
    if (!sr->active) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called after "
                        "the request was finished");
        return NULL;
    }
    if (exc_info != Py_None) {
        if (sr->headers_sent) {
            /* PEP 3333: too late to change anything; re-raise. */
            if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) < 2) {
                PyErr_SetString(PyExc_TypeError, "exc_info must be a "
                                "(type, value, traceback) tuple");
                return NULL;
            }
            PyObject *v = PyTuple_GET_ITEM(exc_info, 1);
            PyErr_SetObject((PyObject *)Py_TYPE(v), v);
            return NULL;
        }
    } else if (sr->called) {
        PyErr_SetString(PyExc_AssertionError, "start_response called a "
                        "second time without providing exc_info.");
        return NULL;
    }
    if (!PyUnicode_Check(status)) {
        PyErr_Format(PyExc_AssertionError, "status %R is not a string",
                     status);
        return NULL;
    }
    if (check_chars(status, "status") < 0 || check_status(status) < 0)
        return NULL;
    PyObject *checked = check_headers(sr, headers);
    if (checked == NULL)
        return NULL;
    Py_INCREF(status);
    Py_XSETREF(sr->status, status);
    Py_XSETREF(sr->headers, checked);
    sr->called = 1;
    /* Cached: sr and its write() are reused by the next request of this
     * worker when the app kept neither (wsgi.c: release_sr). */
    if (sr->write == NULL) {
        sr->write = PyObject_GetAttrString((PyObject *)sr, "write");
        if (sr->write == NULL)
            return NULL;
    }
    return Py_NewRef(sr->write);
}

/* In sr's critical section: an app may call start_response() and write()
 * from threads of its own (a no-op where there is a GIL; wsgi.c). */
static PyObject *
sr_start(StartResponseObject *sr, PyObject *status, PyObject *headers,
         PyObject *exc_info)
{
    PyObject *res;
    WC_BEGIN_LOCKED((PyObject *)sr)
    res = sr_start_locked(sr, status, headers, exc_info);
    WC_END_LOCKED()
    return res;
}

static PyObject *
sr_call(StartResponseObject *sr, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"status", "headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:start_response", kwlist,
                                     &status, &headers, &exc_info))
        return NULL;
    return sr_start(sr, status, headers, exc_info);
}

/* The call every app makes once per request, without the argument tuple
 * and the parser sr_call pays for.  Keywords go the slow way. */
static PyObject *
sr_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
              PyObject *kwnames)
{
    StartResponseObject *sr = (StartResponseObject *)self;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && (n == 2 || n == 3))
        return sr_start(sr, args[0], args[1], n == 3 ? args[2] : Py_None);
    PyObject *tuple = PyTuple_New(n);
    PyObject *kw = NULL, *res = NULL;
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    if (kwnames != NULL) {
        if ((kw = PyDict_New()) == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i),
                               args[n + i]) < 0)
                goto done;
        }
    }
    res = sr_call(sr, tuple, kw);
done:
    Py_DECREF(tuple);
    Py_XDECREF(kw);
    return res;
}

void
wc_start_response_init(StartResponseObject *sr)
{
    sr->vectorcall = sr_vectorcall;
    sr->write = NULL;
    sr->hints = NULL;
    sr->tmpls = NULL;
}

/* Let go of sr's EarlyHints: one still referenced elsewhere (an environ
 * kept past its request) no longer reaches sr, so it can never send in
 * the middle of another request's response, nor outlive sr. */
static void
drop_hints(StartResponseObject *sr)
{
    if (sr->hints == NULL)
        return;
    ((EarlyHintsObject *)sr->hints)->sr = NULL;
    Py_CLEAR(sr->hints);
}

static PyObject *
sr_write_locked(StartResponseObject *sr, PyObject *data)
{
    if (!sr->active) {
        PyErr_SetString(PyExc_RuntimeError, "write() called after the "
                        "request was finished");
        return NULL;
    }
    if (!sr->called) {
        PyErr_SetString(PyExc_RuntimeError, "start_response was not called "
                        "before body written");
        return NULL;
    }
    Py_buffer view;
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() argument must be bytes, not "
                     "%.80s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int rv = wc_response_write(sr, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (rv < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
sr_write(StartResponseObject *sr, PyObject *data)
{
    PyObject *res;
    WC_BEGIN_LOCKED((PyObject *)sr)
    res = sr_write_locked(sr, data);
    WC_END_LOCKED()
    return res;
}

static void
sr_dealloc(StartResponseObject *sr)
{
    PyTypeObject *tp = Py_TYPE(sr);
    Py_XDECREF(sr->status);
    Py_XDECREF(sr->headers);
    Py_XDECREF(sr->write);
    Py_XDECREF(sr->tmpls);
    drop_hints(sr);
    PyObject_Free(sr);
    Py_DECREF(tp);
}

static PyMethodDef sr_methods[] = {
    {"write", (PyCFunction)sr_write, METH_O,
     "write(data): send body bytes now (PEP 3333's write callable)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef sr_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET,
     offsetof(StartResponseObject, vectorcall), Py_READONLY},
    {NULL},
};

static PyType_Slot sr_slots[] = {
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_methods, sr_methods},
    {Py_tp_members, sr_members},
    {Py_tp_dealloc, sr_dealloc},
    {Py_tp_doc, "start_response(status, headers, exc_info=None)"},
    {0, NULL},
};

PyType_Spec wc_start_response_spec = {
    .name = "waitress_c._core.StartResponse",
    .basicsize = sizeof(StartResponseObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION
             | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = sr_slots,
};


/* ---- environ["wsgi.early_hints"] ---------------------------------------- */

int
wc_early_hints_take(StartResponseObject *sr, PyTypeObject *type)
{
    /* Held only by sr and its templates: the usual case, nothing to
     * make.  Else the last request's environ is still alive (a
     * framework's reference cycle, until the cycle collector runs): a new
     * one, so that the StartResponse itself stays reusable. */
    Py_ssize_t mine = 1 + (sr->tmpls ? PyTuple_GET_SIZE(sr->tmpls) : 0);
    if (sr->hints != NULL && Py_REFCNT(sr->hints) == mine)
        return 0;
    drop_hints(sr);
    EarlyHintsObject *h = PyObject_New(EarlyHintsObject, type);   /* new */
    if (h == NULL)
        return -1;
    h->sr = sr;
    sr->hints = (PyObject *)h;      /* sr's reference */
    return 1;
}

/* early_hints(headers): a "103 Early Hints" interim response with these
 * (name, value) headers, sent at once, before the final response (RFC
 * 8297; gunicorn's wsgi.early_hints).  The headers are checked as
 * start_response checks its own, and an interim response has no
 * Content-Length (RFC 9110 8.6).  On HTTP/1.0 it checks them and sends
 * nothing: a server must not send a 1xx to an HTTP/1.0 client (15.2). */
static PyObject *
hints_send_locked(StartResponseObject *sr, PyObject *headers)
{
    if (!sr->active) {
        PyErr_SetString(PyExc_RuntimeError, "early_hints called after the "
                        "request was finished");
        return NULL;
    }
    if (sr->headers_sent) {
        /* The final head is out: a 1xx now would be read as the start
         * of the next response. */
        PyErr_SetString(PyExc_RuntimeError, "early_hints called after the "
                        "response headers were sent");
        return NULL;
    }
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_AssertionError, "headers must be a list, not "
                     "%.80s", Py_TYPE(headers)->tp_name);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *name, *value;     /* borrowed */
        if (check_pair(PyList_GET_ITEM(headers, i), &name, &value) < 0)
            return NULL;
        if (WC_IEQ(name, "content-length")) {
            PyErr_SetString(PyExc_ValueError, "Content-Length in an "
                            "interim response (RFC 9110 8.6)");
            return NULL;
        }
    }
    /* No Python code runs between the checks and the writing: the list
     * is written as it was checked. */
    if (wc_response_hints(sr, headers) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
hints_call(EarlyHintsObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"headers", NULL};
    PyObject *headers;      /* borrowed */
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:early_hints", kwlist,
                                     &headers))
        return NULL;
    StartResponseObject *sr = self->sr;
    if (sr == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "early_hints called after the "
                        "request was finished");
        return NULL;
    }
    /* In sr's critical section, like start_response() and write(). */
    PyObject *res;
    Py_INCREF(sr);
    WC_BEGIN_LOCKED((PyObject *)sr)
    res = hints_send_locked(sr, headers);
    WC_END_LOCKED()
    Py_DECREF(sr);
    return res;
}

static void
hints_dealloc(EarlyHintsObject *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    PyObject_Free(h);
    Py_DECREF(tp);
}

static PyType_Slot hints_slots[] = {
    {Py_tp_call, hints_call},
    {Py_tp_dealloc, hints_dealloc},
    {Py_tp_doc, "early_hints(headers): send 103 Early Hints with these "
                "(name, value) headers now, before the final response."},
    {0, NULL},
};

PyType_Spec wc_early_hints_spec = {
    .name = "waitress_c._core.EarlyHints",
    .basicsize = sizeof(EarlyHintsObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = hints_slots,
};
