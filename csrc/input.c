/* input.c: wsgi.input for bodies held in memory.  A complete, seekable,
 * read-only file over the body bytes, which it owns (taken from the
 * request without a copy).  Bodies spooled to disk use a plain io file.
 *
 * GIL map: worker threads (and whatever thread the app hands it to), GIL
 * held.
 */
#include "wc.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t len;
    Py_ssize_t pos;
    int closed;
} InputObject;

PyObject *
wc_input_new(PyTypeObject *type, char *data, size_t len)
{
    InputObject *in = PyObject_New(InputObject, type);
    if (in == NULL) {
        free(data);
        return NULL;
    }
    in->data = data;
    in->len = (Py_ssize_t)len;
    in->pos = 0;
    in->closed = 0;
    return (PyObject *)in;
}

static int
check_open(InputObject *in)
{
    if (in->closed) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed file.");
        return -1;
    }
    return 0;
}

/* The optional size/hint argument of read(), readline(), readlines(),
 * with the checks they share.  -1 (no limit) when absent or None. */
static int
size_arg(InputObject *in, const char *name, PyObject *const *args,
         Py_ssize_t nargs, Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument", name);
        return -1;
    }
    if (check_open(in) < 0)
        return -1;
    if (nargs == 0 || args[0] == Py_None)
        return 0;
    *size = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (*size == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

static PyObject *
take(InputObject *in, Py_ssize_t n)
{
    if (n <= 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    PyObject *b = PyBytes_FromStringAndSize(in->data + in->pos, n);
    if (b)
        in->pos += n;
    return b;
}

static PyObject *
in_read(InputObject *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;
    if (size_arg(in, "read", args, nargs, &size) < 0)
        return NULL;
    Py_ssize_t left = in->len > in->pos ? in->len - in->pos : 0;
    if (size < 0 || size > left)
        size = left;
    return take(in, size);
}

static Py_ssize_t
line_len(InputObject *in, Py_ssize_t limit)
{
    Py_ssize_t left = in->len > in->pos ? in->len - in->pos : 0;
    if (limit >= 0 && limit < left)
        left = limit;
    const char *nl = memchr(in->data + in->pos, '\n', (size_t)left);
    return nl ? (Py_ssize_t)(nl - (in->data + in->pos)) + 1 : left;
}

static PyObject *
in_readline(InputObject *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;
    if (size_arg(in, "readline", args, nargs, &size) < 0)
        return NULL;
    if (in->pos >= in->len)
        return PyBytes_FromStringAndSize(NULL, 0);
    return take(in, line_len(in, size));
}

static PyObject *
in_readlines(InputObject *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint;
    if (size_arg(in, "readlines", args, nargs, &hint) < 0)
        return NULL;
    PyObject *lines = PyList_New(0);
    if (lines == NULL)
        return NULL;
    Py_ssize_t total = 0;
    while (in->pos < in->len) {
        Py_ssize_t n = line_len(in, -1);
        PyObject *line = take(in, n);
        if (line == NULL || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            Py_DECREF(lines);
            return NULL;
        }
        Py_DECREF(line);
        total += n;
        if (hint > 0 && total >= hint)
            break;
    }
    return lines;
}

static PyObject *
in_iternext(InputObject *in)
{
    if (check_open(in) < 0)
        return NULL;
    if (in->pos >= in->len)
        return NULL;
    return take(in, line_len(in, -1));
}

static PyObject *
in_iter(InputObject *in)
{
    if (check_open(in) < 0)
        return NULL;
    return Py_NewRef(in);
}

static PyObject *
in_seek(InputObject *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off, whence = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "seek() takes 1 or 2 arguments");
        return NULL;
    }
    if (check_open(in) < 0)
        return NULL;
    off = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (off == -1 && PyErr_Occurred())
        return NULL;
    if (nargs == 2) {
        whence = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
        if (whence == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_ssize_t base;
    switch (whence) {
    case 0: base = 0; break;
    case 1: base = in->pos; break;
    case 2: base = in->len; break;
    default:
        PyErr_Format(PyExc_ValueError, "invalid whence (%zd, should be 0, 1 "
                     "or 2)", whence);
        return NULL;
    }
    /* base is 0..PY_SSIZE_T_MAX: only a positive offset can overflow.
     * The errors are io.BytesIO's. */
    if (off > 0 && off > PY_SSIZE_T_MAX - base) {
        PyErr_SetString(PyExc_OverflowError, "new position too large");
        return NULL;
    }
    if (base + off < 0) {
        PyErr_Format(PyExc_ValueError, "negative seek value %zd", base + off);
        return NULL;
    }
    in->pos = base + off;
    return PyLong_FromSsize_t(in->pos);
}

static PyObject *
in_tell(InputObject *in, PyObject *unused)
{
    if (check_open(in) < 0)
        return NULL;
    return PyLong_FromSsize_t(in->pos);
}

static PyObject *
in_true(InputObject *in, PyObject *unused)
{
    if (check_open(in) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *
in_false(InputObject *in, PyObject *unused)
{
    if (check_open(in) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *
in_close(InputObject *in, PyObject *unused)
{
    in->closed = 1;
    free(in->data);
    in->data = NULL;
    in->len = in->pos = 0;
    Py_RETURN_NONE;
}

static PyObject *
in_enter(InputObject *in, PyObject *unused)
{
    if (check_open(in) < 0)
        return NULL;
    return Py_NewRef(in);
}

static PyObject *in_close_locked(InputObject *in, PyObject *unused);

static PyObject *
in_exit(InputObject *in, PyObject *args)
{
    return in_close_locked(in, NULL);
}

static PyObject *
in_get_closed(InputObject *in, void *unused)
{
    return PyBool_FromLong(in->closed);
}

static void
in_dealloc(InputObject *in)
{
    PyTypeObject *tp = Py_TYPE(in);
    free(in->data);
    PyObject_Free(in);
    Py_DECREF(tp);
}

/* The methods that read or change the position, the data or `closed`
 * run in the object's critical section: the app may share wsgi.input
 * between threads, and without a GIL a read racing close() would read
 * freed memory (nothing where there is a GIL). */
#define LOCKED_FASTCALL(fn)                                                 \
    static PyObject *fn##_locked(InputObject *in, PyObject *const *args,   \
                                 Py_ssize_t nargs)                         \
    {                                                                       \
        PyObject *r;                                                        \
        WC_BEGIN_LOCKED(in);                                                \
        r = fn(in, args, nargs);                                            \
        WC_END_LOCKED();                                                    \
        return r;                                                           \
    }
#define LOCKED_NOARGS(fn)                                                   \
    static PyObject *fn##_locked(InputObject *in, PyObject *unused)        \
    {                                                                       \
        PyObject *r;                                                        \
        WC_BEGIN_LOCKED(in);                                                \
        r = fn(in, unused);                                                 \
        WC_END_LOCKED();                                                    \
        return r;                                                           \
    }
LOCKED_FASTCALL(in_read)
LOCKED_FASTCALL(in_readline)
LOCKED_FASTCALL(in_readlines)
LOCKED_FASTCALL(in_seek)
LOCKED_NOARGS(in_tell)
LOCKED_NOARGS(in_close)

static PyObject *
in_iternext_locked(InputObject *in)
{
    PyObject *r;
    WC_BEGIN_LOCKED(in);
    r = in_iternext(in);
    WC_END_LOCKED();
    return r;
}

static PyMethodDef in_methods[] = {
    {"read", (PyCFunction)(void (*)(void))in_read_locked, METH_FASTCALL,
     "read(size=-1) -> bytes"},
    {"readline", (PyCFunction)(void (*)(void))in_readline_locked, METH_FASTCALL,
     "readline(size=-1) -> bytes"},
    {"readlines", (PyCFunction)(void (*)(void))in_readlines_locked, METH_FASTCALL,
     "readlines(hint=-1) -> list of bytes"},
    {"seek", (PyCFunction)(void (*)(void))in_seek_locked, METH_FASTCALL,
     "seek(offset, whence=0) -> new position"},
    {"tell", (PyCFunction)in_tell_locked, METH_NOARGS, "tell() -> position"},
    {"seekable", (PyCFunction)in_true, METH_NOARGS, NULL},
    {"readable", (PyCFunction)in_true, METH_NOARGS, NULL},
    {"writable", (PyCFunction)in_false, METH_NOARGS, NULL},
    {"close", (PyCFunction)in_close_locked, METH_NOARGS, NULL},
    {"__enter__", (PyCFunction)in_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)in_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef in_getset[] = {
    {"closed", (getter)in_get_closed, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot in_slots[] = {
    {Py_tp_methods, in_methods},
    {Py_tp_getset, in_getset},
    {Py_tp_iter, in_iter},
    {Py_tp_iternext, in_iternext_locked},
    {Py_tp_dealloc, in_dealloc},
    {Py_tp_doc, "wsgi.input: the request body, complete and seekable."},
    {0, NULL},
};

PyType_Spec wc_input_spec = {
    .name = "waitress_c._core.Input",
    .basicsize = sizeof(InputObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = in_slots,
};
