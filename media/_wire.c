/* The media path's two per-packet costs that need no Python: libsrtp's protect or
 * unprotect on one session, and a protected packet's send on the node's shared UDP
 * socket. Python keeps every decision; this only saves the copies, the cffi calls
 * and the event loop's address conversion each packet would otherwise pay.
 *
 * libsrtp itself is pylibsrtp's: media/aiortc_internals.py hands over the address of
 * its srtp_protect or srtp_unprotect and of a session's context, with the session,
 * which is kept alive here for as long as the context is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* Room for the largest datagram the node takes in, plus libsrtp's largest trailer. */
#define MAX_PACKET 1500
#define MAX_TRAILER 512

typedef int (*srtp_call)(void *context, void *packet, int *length);

typedef struct {
    PyObject_HEAD
    srtp_call call;
    void *context;
    PyObject *session; /* owns the context */
    int trailer;       /* bytes the call may add */
} Srtp;

static int Srtp_init(Srtp *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"session", "call", "context", "trailer", NULL};
    PyObject *session;
    unsigned long long call, context;
    int trailer;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKKi", kwlist, &session, &call, &context,
                                     &trailer))
        return -1;
    if (!call || !context || trailer < 0 || trailer > MAX_TRAILER) {
        PyErr_SetString(PyExc_ValueError, "an SRTP call needs a function, a context and a trailer");
        return -1;
    }
    Py_INCREF(session);
    Py_XSETREF(self->session, session);
    self->call = (srtp_call)(uintptr_t)call;
    self->context = (void *)(uintptr_t)context;
    self->trailer = trailer;
    return 0;
}

static void Srtp_dealloc(Srtp *self) {
    Py_XDECREF(self->session);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The packet processed (protected or unprotected) as new bytes; None when libsrtp
 * refuses it (forged, replayed, damaged) or it is too long. */
static PyObject *Srtp_call(Srtp *self, PyObject *args, PyObject *kwds) {
    Py_buffer packet;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "an SRTP call takes the packet only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*", &packet))
        return NULL;
    if (packet.len > MAX_PACKET || self->call == NULL) {
        PyBuffer_Release(&packet);
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, packet.len + self->trailer);
    if (out == NULL) {
        PyBuffer_Release(&packet);
        return NULL;
    }
    int length = (int)packet.len;
    memcpy(PyBytes_AS_STRING(out), packet.buf, packet.len);
    PyBuffer_Release(&packet);
    if (self->call(self->context, PyBytes_AS_STRING(out), &length) != 0) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&out, length) < 0)
        return NULL;
    return out;
}

/* send(fd, address, packet): protect ``packet`` and send it from socket ``fd`` to
 * ``address`` (from sockaddr()); the number of bytes the kernel took, or 0 when
 * libsrtp refused the packet or the socket could not take it (a full buffer drops a
 * real-time packet, as a router would). Nothing is allocated. */
static PyObject *Srtp_send(Srtp *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "send(fd, address, packet)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "the address and the packet are bytes");
        return NULL;
    }
    Py_ssize_t address_size = PyBytes_GET_SIZE(args[1]);
    if (address_size != sizeof(struct sockaddr_in) && address_size != sizeof(struct sockaddr_in6)) {
        PyErr_SetString(PyExc_ValueError, "not an address from sockaddr()");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[2]);
    if (size > MAX_PACKET)
        return PyLong_FromLong(0);
    _Alignas(16) unsigned char buffer[MAX_PACKET + MAX_TRAILER];
    memcpy(buffer, PyBytes_AS_STRING(args[2]), size);
    int length = (int)size;
    if (self->call(self->context, buffer, &length) != 0)
        return PyLong_FromLong(0);
    ssize_t sent = sendto((int)fd, buffer, (size_t)length, MSG_DONTWAIT,
                          (const struct sockaddr *)PyBytes_AS_STRING(args[1]),
                          (socklen_t)address_size);
    return PyLong_FromSsize_t(sent < 0 ? 0 : sent);
}

static PyMethodDef Srtp_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Srtp_send, METH_FASTCALL,
     "send(fd, address, packet) -> bytes sent (0: not sent)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Srtp_members[] = {
    {"session", T_OBJECT, offsetof(Srtp, session), READONLY, "whose context this uses"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SrtpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._wire.Srtp",
    .tp_basicsize = sizeof(Srtp),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Srtp(session, call, context, trailer): one libsrtp call on one session",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Srtp_init,
    .tp_dealloc = (destructor)Srtp_dealloc,
    .tp_call = (ternaryfunc)Srtp_call,
    .tp_methods = Srtp_methods,
    .tp_members = Srtp_members,
};


/* -- the rewriter's common case (media/rtp/rewriter.py) ------------------------------ */

/* StreamRewriter's state, held here so that rewrite() reads it without Python; the
 * Python subclass keeps every other method, on the same attributes. */
typedef struct {
    PyObject_HEAD
    long long ssrc;
    PyObject *pt_map;     /* input PT -> output PT */
    PyObject *ext_tables; /* None, or (one-byte form table, two-byte form table) */
    char pending;
    char started;
    long long in_ssrc;
    long long max_in;
    long long ext;
    long long seq_off;
    long long ts_off;
    long long last_seq;
    long long last_ts;
} RewriterCore;

static int RewriterCore_traverse(RewriterCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->pt_map);
    Py_VISIT(self->ext_tables);
    return 0;
}

static int RewriterCore_clear(RewriterCore *self) {
    Py_CLEAR(self->pt_map);
    Py_CLEAR(self->ext_tables);
    return 0;
}

static void RewriterCore_dealloc(RewriterCore *self) {
    PyObject_GC_UnTrack(self);
    RewriterCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* RFC 8285 element ids renumbered in place (see media/rtp/extensions.py, whose
 * remap_block this follows step for step); 0 if the extension is cut short. */
static int remap_extensions(unsigned char *packet, Py_ssize_t size, PyObject *tables) {
    Py_ssize_t pos = 12 + 4 * (packet[0] & 0x0F);
    if (size < pos + 4)
        return 0;
    Py_ssize_t end = pos + 4 + 4 * ((packet[pos + 2] << 8) | packet[pos + 3]);
    if (size < end)
        return 0;
    int profile = (packet[pos] << 8) | packet[pos + 1];
    const unsigned char *one = (const unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(tables, 0));
    const unsigned char *two = (const unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(tables, 1));
    unsigned char *block = packet + pos + 4;
    Py_ssize_t at = 0, stop, length = end - pos - 4;
    if (profile == 0xBEDE) {
        while (at < length) {
            unsigned char head = block[at];
            if (!head) {
                at++;
                continue;
            }
            stop = at + 2 + (head & 0x0F);
            if (one[head])
                block[at] = one[head];
            else if (head >= 0xF0)
                break; /* id 15: the rest is not to be parsed */
            else
                memset(block + at, 0, (stop < length ? stop : length) - at);
            at = stop;
        }
    } else if ((profile & 0xFFF0) == 0x1000) {
        while (at < length) {
            unsigned char id = block[at];
            if (!id) {
                at++;
                continue;
            }
            if (at + 1 >= length) {
                block[at] = 0;
                break;
            }
            stop = at + 2 + block[at + 1];
            if (two[id])
                block[at] = two[id];
            else
                memset(block + at, 0, (stop < length ? stop : length) - at);
            at = stop;
        }
    }
    return 1;
}

static PyObject *rewrite_other(PyObject *self, PyObject *packet) {
    static PyObject *name = NULL;
    if (name == NULL && (name = PyUnicode_InternFromString("_rewrite_other")) == NULL)
        return NULL;
    return PyObject_CallMethodOneArg(self, name, packet);
}

/* rewrite(packet): an in-order packet of the current source, mapped here; anything
 * else (not anchored yet, another SSRC, late, an unmapped payload type, not bytes)
 * takes the Python method _rewrite_other, which is the whole of the logic. */
static PyObject *RewriterCore_rewrite(RewriterCore *self, PyObject *packet) {
    if (!PyBytes_CheckExact(packet) || PyBytes_GET_SIZE(packet) < 12 || self->pending ||
        self->pt_map == NULL || !PyDict_CheckExact(self->pt_map))
        return rewrite_other((PyObject *)self, packet);
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(packet);
    Py_ssize_t size = PyBytes_GET_SIZE(packet);
    long long ssrc = ((long long)in[8] << 24) | (in[9] << 16) | (in[10] << 8) | in[11];
    long long seq = (in[2] << 8) | in[3];
    long long delta = (seq - self->max_in) & 0xFFFF;
    if (ssrc != self->in_ssrc || delta == 0 || delta >= 0x8000)
        return rewrite_other((PyObject *)self, packet);
    PyObject *pt = PyLong_FromLong(in[1] & 0x7F); /* a small int: cached, not allocated */
    PyObject *out_pt = PyDict_GetItemWithError(self->pt_map, pt);
    Py_DECREF(pt);
    if (out_pt == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return rewrite_other((PyObject *)self, packet);
    }
    long out_type = PyLong_AsLong(out_pt);
    if (out_type == -1 && PyErr_Occurred())
        return NULL;
    PyObject *tables = self->ext_tables;
    int remap = tables != NULL && tables != Py_None && (in[0] & 0x10);
    if (remap && !(PyTuple_CheckExact(tables) && PyTuple_GET_SIZE(tables) == 2 &&
                   PyBytes_CheckExact(PyTuple_GET_ITEM(tables, 0)) &&
                   PyBytes_GET_SIZE(PyTuple_GET_ITEM(tables, 0)) == 256 &&
                   PyBytes_CheckExact(PyTuple_GET_ITEM(tables, 1)) &&
                   PyBytes_GET_SIZE(PyTuple_GET_ITEM(tables, 1)) == 256))
        return rewrite_other((PyObject *)self, packet);
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    /* in order (or after a loss): the common case */
    long long ts = ((long long)in[4] << 24) | (in[5] << 16) | (in[6] << 8) | in[7];
    self->max_in = seq;
    self->ext += delta;
    seq = (seq + self->seq_off) & 0xFFFF;
    ts = (ts + self->ts_off) & 0xFFFFFFFFLL;
    self->last_seq = seq;
    self->last_ts = ts;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(o, in, size);
    o[1] = (in[1] & 0x80) | (out_type & 0x7F);
    o[2] = seq >> 8, o[3] = seq & 0xFF;
    o[4] = ts >> 24, o[5] = (ts >> 16) & 0xFF, o[6] = (ts >> 8) & 0xFF, o[7] = ts & 0xFF;
    o[8] = self->ssrc >> 24, o[9] = (self->ssrc >> 16) & 0xFF;
    o[10] = (self->ssrc >> 8) & 0xFF, o[11] = self->ssrc & 0xFF;
    if (remap && !remap_extensions(o, size, tables)) {
        Py_DECREF(out);
        Py_RETURN_NONE; /* its extension is cut short */
    }
    return out;
}

static PyMethodDef RewriterCore_methods[] = {
    {"rewrite", (PyCFunction)RewriterCore_rewrite, METH_O,
     "A new packet with SSRC, PT, seq and ts replaced, or None to drop it."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef RewriterCore_members[] = {
    {"ssrc", T_LONGLONG, offsetof(RewriterCore, ssrc), 0, "our SSRC"},
    {"pt_map", T_OBJECT, offsetof(RewriterCore, pt_map), 0, "input PT -> output PT"},
    {"_ext_tables", T_OBJECT, offsetof(RewriterCore, ext_tables), 0, NULL},
    {"_pending", T_BOOL, offsetof(RewriterCore, pending), 0, NULL},
    {"_started", T_BOOL, offsetof(RewriterCore, started), 0, NULL},
    {"_in_ssrc", T_LONGLONG, offsetof(RewriterCore, in_ssrc), 0, NULL},
    {"_max_in", T_LONGLONG, offsetof(RewriterCore, max_in), 0, NULL},
    {"_ext", T_LONGLONG, offsetof(RewriterCore, ext), 0, NULL},
    {"_seq_off", T_LONGLONG, offsetof(RewriterCore, seq_off), 0, NULL},
    {"_ts_off", T_LONGLONG, offsetof(RewriterCore, ts_off), 0, NULL},
    {"_last_seq", T_LONGLONG, offsetof(RewriterCore, last_seq), 0, NULL},
    {"_last_ts", T_LONGLONG, offsetof(RewriterCore, last_ts), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RewriterCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._wire.RewriterCore",
    .tp_basicsize = sizeof(RewriterCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "media.rtp.StreamRewriter's state and its common case",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)RewriterCore_dealloc,
    .tp_traverse = (traverseproc)RewriterCore_traverse,
    .tp_clear = (inquiry)RewriterCore_clear,
    .tp_methods = RewriterCore_methods,
    .tp_members = RewriterCore_members,
};

/* sockaddr(host, port[, flowinfo, scope_id]): the address as the kernel takes it, for Srtp.send. */
static PyObject *wire_sockaddr(PyObject *Py_UNUSED(module), PyObject *args) {
    const char *host;
    int port;
    unsigned int flowinfo = 0, scope_id = 0;
    if (!PyArg_ParseTuple(args, "si|II", &host, &port, &flowinfo, &scope_id))
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    struct sockaddr_in v4;
    memset(&v4, 0, sizeof v4);
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v4, sizeof v4);
    }
    struct sockaddr_in6 v6;
    memset(&v6, 0, sizeof v6);
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)port);
        v6.sin6_flowinfo = htonl(flowinfo);
        v6.sin6_scope_id = scope_id;
        return PyBytes_FromStringAndSize((const char *)&v6, sizeof v6);
    }
    PyErr_SetString(PyExc_ValueError, "not a numeric IPv4 or IPv6 address");
    return NULL;
}

static PyMethodDef wire_methods[] = {
    {"sockaddr", wire_sockaddr, METH_VARARGS, "sockaddr(host, port, flowinfo=0, scope_id=0) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wire_module = {
    PyModuleDef_HEAD_INIT, .m_name = "media._wire",
    .m_doc = "libsrtp calls and sends without Python per packet", .m_size = -1,
    .m_methods = wire_methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    if (PyType_Ready(&SrtpType) < 0 || PyType_Ready(&RewriterCoreType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&wire_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&SrtpType);
    if (PyModule_AddObject(module, "Srtp", (PyObject *)&SrtpType) < 0) {
        Py_DECREF(&SrtpType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&RewriterCoreType);
    if (PyModule_AddObject(module, "RewriterCore", (PyObject *)&RewriterCoreType) < 0) {
        Py_DECREF(&RewriterCoreType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
