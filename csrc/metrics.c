/* metrics.c: the server's counters (loop.h, "metrics.c") as the rest of
 * the core records them, and the module functions that the Python side
 * (waitress_c/metrics.py) uses to read them out of a metrics buffer.
 *
 * The loop and the workers write their cells where they are (channel.c,
 * channel_out.c, server.c, dispatch.c); this file holds the one record
 * that needs more than an increment (a finished request: status class,
 * method, duration bucket) and the layout the exposition is built from.
 *
 * A metrics buffer is any writable buffer (waitress_c/metrics.py uses an
 * anonymous shared mmap made before the workers are forked) of whole
 * slots of WC_M_SLOT_BYTES bytes.  Cells are read with relaxed atomic
 * loads: a scrape sees each cell whole, not all of them at one instant.
 *
 * GIL map: wc_metrics_request runs on a worker holding the GIL (which
 * serializes its cells: wc_m_gil_add).  The module functions hold the
 * GIL.
 */
#include "wc.h"

#include <string.h>

/* The request-duration buckets' upper bounds, in nanoseconds (those of
 * the common Prometheus client libraries, 5 ms to 10 s); the last bucket
 * is +Inf. */
static const uint64_t bucket_ns[WC_M_NBUCKET - 1] = {
    5000000ull,    10000000ull,   25000000ull,    50000000ull,
    75000000ull,   100000000ull,  250000000ull,   500000000ull,
    750000000ull,  1000000000ull, 2500000000ull,  5000000000ull,
    7500000000ull, 10000000000ull,
};

static const char *const method_names[WC_M_NMETHOD] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
};

/* The method's index in method_names: one comparison at most. */
static int
method_index(const char *m, uint32_t n)
{
    int i;
    switch (n) {
    case 3: i = m[0] == 'G' ? 0 : 3; break;
    case 4: i = m[0] == 'H' ? 1 : 2; break;
    case 5: i = 5; break;
    case 6: i = 4; break;
    case 7: i = 6; break;
    default: return WC_M_NMETHOD - 1;
    }
    return memcmp(m, method_names[i], n) == 0 ? i : WC_M_NMETHOD - 1;
}

void
wc_metrics_request(wc_metric_t *m, const wc_request_t *r, int status)
{
    if (status < 100 || status > 599)
        return;
    int method = r->method ? method_index(r->method, r->method_len)
                           : WC_M_NMETHOD - 1;
    int cls = status / 100 - 1;
    wc_m_gil_add(m, WC_M_REQUESTS + cls * WC_M_NMETHOD + method, 1);
    uint64_t now = uv_hrtime();
    uint64_t ns = r->done_ns && now > r->done_ns ? now - r->done_ns : 0;
    int b = 0;
    while (b < WC_M_NBUCKET - 1 && ns > bucket_ns[b])
        b++;
    wc_m_gil_add(m, WC_M_DURATION + b, 1);
    wc_m_gil_add(m, WC_M_DURATION_NS, (int64_t)ns);
}

/* ---- the Python side's view ------------------------------------------- */

wc_metric_t *
wc_metrics_attach(PyObject *buf, Py_ssize_t slot, Py_buffer *view)
{
    if (PyObject_GetBuffer(buf, view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (slot < 0 || view->len / (Py_ssize_t)WC_M_SLOT_BYTES <= slot
        || ((uintptr_t)view->buf & 63) != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "no metrics slot %zd in this buffer "
                     "(it must be 64-byte aligned, of whole slots)", slot);
        return NULL;
    }
    return (wc_metric_t *)((char *)view->buf
                           + (size_t)slot * WC_M_SLOT_BYTES);
}

/* metrics_read(buffer, slot) -> tuple of the slot's cells (ints). */
static PyObject *
metrics_read(PyObject *mod, PyObject *args)
{
    PyObject *buf;
    Py_ssize_t slot;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "On:metrics_read", &buf, &slot))
        return NULL;
    wc_metric_t *m = wc_metrics_attach(buf, slot, &view);
    if (m == NULL)
        return NULL;
    PyObject *t = PyTuple_New(WC_M_NFIELDS);
    for (int i = 0; t != NULL && i < WC_M_NFIELDS; i++) {
        uint64_t v = atomic_load_explicit(&m[i], memory_order_relaxed);
        PyObject *o = PyLong_FromUnsignedLongLong(v);
        if (o == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, o);
    }
    PyBuffer_Release(&view);
    return t;
}

/* metrics_fold(buffer, src, dst): a worker process is gone: add its
 * counters to slot dst (its high-water mark as a maximum), drop its
 * gauges, and zero slot src for the next worker.  Only the supervisor
 * calls it, on slots no process writes. */
static PyObject *
metrics_fold(PyObject *mod, PyObject *args)
{
    PyObject *buf;
    Py_ssize_t src, dst;
    Py_buffer vs, vd;
    if (!PyArg_ParseTuple(args, "Onn:metrics_fold", &buf, &src, &dst))
        return NULL;
    wc_metric_t *s = wc_metrics_attach(buf, src, &vs);
    if (s == NULL)
        return NULL;
    wc_metric_t *d = wc_metrics_attach(buf, dst, &vd);
    if (d == NULL) {
        PyBuffer_Release(&vs);
        return NULL;
    }
    for (int i = 0; i < WC_M_GAUGES; i++) {
        uint64_t v = atomic_load_explicit(&s[i], memory_order_relaxed);
        uint64_t w = atomic_load_explicit(&d[i], memory_order_relaxed);
        if (i == WC_M_QUEUE_MAX)
            w = v > w ? v : w;
        else
            w += v;
        atomic_store_explicit(&d[i], w, memory_order_relaxed);
    }
    for (int i = 0; i < WC_M_NFIELDS; i++)
        atomic_store_explicit(&s[i], 0, memory_order_relaxed);
    PyBuffer_Release(&vs);
    PyBuffer_Release(&vd);
    Py_RETURN_NONE;
}

static PyMethodDef metrics_methods[] = {
    {"metrics_read", metrics_read, METH_VARARGS,
     "metrics_read(buffer, slot): the cells of one metrics slot."},
    {"metrics_fold", metrics_fold, METH_VARARGS,
     "metrics_fold(buffer, src, dst): add slot src's counters to slot\n"
     "dst and zero src (a worker process is gone)."},
    {NULL, NULL, 0, NULL},
};

/* New reference: a tuple of C strings as str. */
static PyObject *
str_tuple(const char *const *names, int n)
{
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t != NULL && i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (s == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

/* METRICS_LAYOUT: where each series is in a slot, for metrics.py. */
int
wc_metrics_init(PyObject *module)
{
    PyObject *buckets = NULL, *methods = NULL, *layout = NULL;
    int rv = -1;
    if (PyModule_AddFunctions(module, metrics_methods) < 0)
        return -1;
    buckets = PyTuple_New(WC_M_NBUCKET - 1);
    for (int i = 0; buckets != NULL && i < WC_M_NBUCKET - 1; i++) {
        PyObject *f = PyFloat_FromDouble((double)bucket_ns[i] / 1e9);
        if (f == NULL)
            Py_CLEAR(buckets);
        else
            PyTuple_SET_ITEM(buckets, i, f);
    }
    methods = str_tuple(method_names, WC_M_NMETHOD);
    if (buckets == NULL || methods == NULL)
        goto done;
    layout = Py_BuildValue(
        "{s:n,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,"
        "s:i,s:O,s:O}",
        "slot_bytes", (Py_ssize_t)WC_M_SLOT_BYTES,
        "nfields", WC_M_NFIELDS,
        "accepted", WC_M_ACCEPTED, "limited", WC_M_LIMITED,
        "bytes_in", WC_M_BYTES_IN, "bytes_out_loop", WC_M_BYTES_OUT_LOOP,
        "bytes_out", WC_M_BYTES_OUT, "spooled", WC_M_SPOOLED,
        "duration_ns", WC_M_DURATION_NS, "requests", WC_M_REQUESTS,
        "duration", WC_M_DURATION, "queue_max", WC_M_QUEUE_MAX,
        "connections", WC_M_CONNECTIONS, "queue", WC_M_QUEUE,
        "busy", WC_M_BUSY, "parked", WC_M_PARKED, "threads", WC_M_THREADS,
        "methods", methods, "buckets", buckets);
    if (layout == NULL)
        goto done;
    rv = PyModule_AddObjectRef(module, "METRICS_LAYOUT", layout);
done:
    Py_XDECREF(layout);
    Py_XDECREF(methods);
    Py_XDECREF(buckets);
    return rv;
}
