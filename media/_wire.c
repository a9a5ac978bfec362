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
    if (PyType_Ready(&SrtpType) < 0)
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
    return module;
}
