/* filewrapper.c: wsgi.file_wrapper, and the waitress.client_disconnected
 * callable.
 *
 * FileWrapper(filelike, block_size=32768) iterates read(block_size) blocks
 * and closes the file with close().  When the app returns one over a
 * regular file, wsgi.c does not iterate it: it sends the file with
 * sendfile(2) from the loop thread.  Like waitress's wrapper it exposes
 * seek/tell/seekable when the file is seekable, so middleware can serve
 * ranges.
 *
 * GIL map: worker threads, GIL held.
 */
#include "wc.h"

static int
fw_init(FileWrapperObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"filelike", "block_size", NULL};
    PyObject *f;
    Py_ssize_t bs = 32768;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|n:FileWrapper", kwlist, &f,
                                     &bs))
        return -1;
    if (bs <= 0) {
        PyErr_SetString(PyExc_ValueError, "block_size must be positive");
        return -1;
    }
    Py_INCREF(f);
    Py_XSETREF(self->filelike, f);
    self->block_size = bs;
    return 0;
}

static PyObject *
fw_iter(FileWrapperObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
fw_next(FileWrapperObject *self)
{
    if (self->filelike == NULL)
        return NULL;
    PyObject *data = PyObject_CallMethod(self->filelike, "read", "n",
                                         self->block_size);
    if (data == NULL)
        return NULL;
    if (PyBytes_Check(data) && PyBytes_GET_SIZE(data) == 0) {
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

static PyObject *
fw_close(FileWrapperObject *self, PyObject *unused)
{
    if (self->filelike && PyObject_HasAttrString(self->filelike, "close"))
        return PyObject_CallMethod(self->filelike, "close", NULL);
    Py_RETURN_NONE;
}

/* seekable: seekable() says so, or there is no seekable() but both seek
 * and tell exist (waitress's rule). */
int
wc_filelike_seekable(PyObject *f)
{
    PyObject *m = PyObject_GetAttrString(f, "seekable");
    if (m == NULL) {
        PyErr_Clear();
        return PyObject_HasAttrString(f, "seek")
               && PyObject_HasAttrString(f, "tell");
    }
    PyObject *r = PyObject_CallNoArgs(m);
    Py_DECREF(m);
    if (r == NULL) {
        PyErr_Clear();
        return 0;
    }
    int yes = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (yes < 0)
        PyErr_Clear();
    return yes > 0;
}

static PyObject *
fw_getattro(FileWrapperObject *self, PyObject *name)
{
    PyObject *r = PyObject_GenericGetAttr((PyObject *)self, name);
    if (r != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return r;
    if (self->filelike == NULL
        || (PyUnicode_CompareWithASCIIString(name, "seek") != 0
            && PyUnicode_CompareWithASCIIString(name, "tell") != 0
            && PyUnicode_CompareWithASCIIString(name, "seekable") != 0))
        return NULL;
    /* Keep our AttributeError aside while asking the file. */
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
#endif
    if (wc_filelike_seekable(self->filelike)) {
        r = PyObject_GetAttr(self->filelike, name);
        if (r != NULL) {
#if PY_VERSION_HEX >= 0x030C0000
            Py_XDECREF(exc);
#else
            Py_XDECREF(t);
            Py_XDECREF(v);
            Py_XDECREF(tb);
#endif
            return r;
        }
        PyErr_Clear();
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(t, v, tb);
#endif
    return NULL;
}

static int
fw_traverse(FileWrapperObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->filelike);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
fw_clear(FileWrapperObject *self)
{
    Py_CLEAR(self->filelike);
    return 0;
}

static void
fw_dealloc(FileWrapperObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fw_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef fw_methods[] = {
    {"close", (PyCFunction)fw_close, METH_NOARGS, "Close the file."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef fw_members[] = {
    {"filelike", Py_T_OBJECT_EX, offsetof(FileWrapperObject, filelike),
     Py_READONLY, NULL},
    {"block_size", Py_T_PYSSIZET, offsetof(FileWrapperObject, block_size),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot fw_slots[] = {
    {Py_tp_init, fw_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_iter, fw_iter},
    {Py_tp_iternext, fw_next},
    {Py_tp_getattro, fw_getattro},
    {Py_tp_methods, fw_methods},
    {Py_tp_members, fw_members},
    {Py_tp_traverse, fw_traverse},
    {Py_tp_clear, fw_clear},
    {Py_tp_dealloc, fw_dealloc},
    {Py_tp_doc, "FileWrapper(filelike, block_size=32768): wsgi.file_wrapper"},
    {0, NULL},
};

PyType_Spec wc_filewrapper_spec = {
    .name = "waitress_c._core.FileWrapper",
    .basicsize = sizeof(FileWrapperObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = fw_slots,
};

/* ---- waitress.client_disconnected ------------------------------------- */

typedef struct {
    PyObject_HEAD
    wc_channel_t *ch;   /* holds a channel reference */
} DisconnectedObject;

/* New reference.  Takes a reference on the channel. */
PyObject *
wc_disconnected_new(PyTypeObject *type, wc_channel_t *ch)
{
    DisconnectedObject *d = PyObject_New(DisconnectedObject, type);
    if (d == NULL)
        return NULL;
    atomic_fetch_add(&ch->refs, 1);
    d->ch = ch;
    return (PyObject *)d;
}

static PyObject *
disc_call(DisconnectedObject *d, PyObject *args, PyObject *kw)
{
    if ((kw && PyDict_GET_SIZE(kw)) || PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "client_disconnected() takes no "
                        "arguments");
        return NULL;
    }
    return PyBool_FromLong(wc_channel_disconnected(d->ch));
}

static void
disc_dealloc(DisconnectedObject *d)
{
    PyTypeObject *tp = Py_TYPE(d);
    wc_channel_unref(d->ch);
    PyObject_Free(d);
    Py_DECREF(tp);
}

static PyType_Slot disc_slots[] = {
    {Py_tp_call, disc_call},
    {Py_tp_dealloc, disc_dealloc},
    {Py_tp_doc, "client_disconnected() -> True once the client is gone"},
    {0, NULL},
};

PyType_Spec wc_disconnected_spec = {
    .name = "waitress_c._core.ClientDisconnected",
    .basicsize = sizeof(DisconnectedObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = disc_slots,
};
