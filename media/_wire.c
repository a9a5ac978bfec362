/* The media path's common case in C: a datagram from a peer, unprotected, taken by
 * its stream and forwarded to each subscriber (rewritten, kept for NACKs, protected,
 * sent on the node's shared UDP socket), with no Python per packet.
 *
 * Python keeps every decision. Each type here is the base of the Python class whose
 * per-packet state it holds as that class's own attributes (RewriterCore for
 * media.rtp.StreamRewriter, HistoryCore for SentHistory, LinkCore for
 * aiortc_internals.Tap, InCore for inbound.InStream, OutCore for outbound.OutStream);
 * its method handles a packet only when nothing out of the ordinary goes on and hands
 * any other packet, untouched, to the Python method that is the whole of the logic
 * (_rewrite_other, _data_received, _send_other, _on_packet_other, _forward_other).
 * tests/unit/test_wire.py drives both with the same packets.
 *
 * libsrtp itself is pylibsrtp's: media/aiortc_internals.py hands over the address of
 * its srtp_protect or srtp_unprotect and of a session's context, with the session,
 * which is kept alive here for as long as the context is used; it also names the
 * attributes of aiortc's DTLS transport read here (dtls_names).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <time.h>
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

/* ``size`` bytes at ``data`` processed (protected or unprotected) as new bytes; None
 * when libsrtp refuses them (forged, replayed, damaged) or they are too long. */
static PyObject *srtp_process(Srtp *self, const void *data, Py_ssize_t size) {
    if (size > MAX_PACKET || self->call == NULL)
        Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size + self->trailer);
    if (out == NULL)
        return NULL;
    int length = (int)size;
    memcpy(PyBytes_AS_STRING(out), data, size);
    if (self->call(self->context, PyBytes_AS_STRING(out), &length) != 0) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&out, length) < 0)
        return NULL;
    return out;
}

/* srtp(packet): srtp_process on any bytes-like packet. */
static PyObject *Srtp_call(Srtp *self, PyObject *args, PyObject *kwds) {
    Py_buffer packet;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "an SRTP call takes the packet only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*", &packet))
        return NULL;
    PyObject *out = srtp_process(self, packet.buf, packet.len);
    PyBuffer_Release(&packet);
    return out;
}

/* ``packet`` (bytes) protected and sent from ``fd`` to ``address`` (bytes from
 * sockaddr()): the bytes the kernel took, 0 when nothing went out, -1 with an
 * exception set for an address of the wrong size. */
static Py_ssize_t srtp_send(Srtp *self, int fd, PyObject *address, PyObject *packet) {
    Py_ssize_t address_size = PyBytes_GET_SIZE(address);
    if (address_size != sizeof(struct sockaddr_in) && address_size != sizeof(struct sockaddr_in6)) {
        PyErr_SetString(PyExc_ValueError, "not an address from sockaddr()");
        return -1;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(packet);
    if (size > MAX_PACKET || self->call == NULL)
        return 0;
    _Alignas(16) unsigned char buffer[MAX_PACKET + MAX_TRAILER];
    memcpy(buffer, PyBytes_AS_STRING(packet), size);
    int length = (int)size;
    if (self->call(self->context, buffer, &length) != 0)
        return 0;
    ssize_t sent = sendto(fd, buffer, (size_t)length, MSG_DONTWAIT,
                          (const struct sockaddr *)PyBytes_AS_STRING(address),
                          (socklen_t)address_size);
    return sent < 0 ? 0 : sent;
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
    Py_ssize_t sent = srtp_send(self, (int)fd, args[1], args[2]);
    return sent < 0 ? NULL : PyLong_FromSsize_t(sent);
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



/* The two arguments of a (first, second) method, given by position or by name. */
static int two_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    const char *first, const char *second, PyObject **out) {
    const char *names[2] = {first, second};
    Py_ssize_t given = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    out[0] = out[1] = NULL;
    if (nargs > 2)
        goto wrong;
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    for (Py_ssize_t k = 0; k < given; k++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        if (name == NULL)
            return -1;
        int slot = strcmp(name, names[0]) == 0 ? 0 : strcmp(name, names[1]) == 0 ? 1 : -1;
        if (slot < 0 || out[slot] != NULL)
            goto wrong;
        out[slot] = args[nargs + k];
    }
    if (out[0] != NULL && out[1] != NULL)
        return 0;
wrong:
    PyErr_Format(PyExc_TypeError, "takes (%s, %s)", first, second);
    return -1;
}

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

/* -- what was sent, kept for NACKs (media/rtp/history.py) --------------------------- */

typedef struct {
    PyObject_HEAD
    long long mask;
    PyObject *seqs;    /* list: the seq held at each slot, -1 for none */
    PyObject *packets; /* list: the packet at each slot */
} HistoryCore;

static int HistoryCore_traverse(HistoryCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->seqs);
    Py_VISIT(self->packets);
    return 0;
}

static int HistoryCore_clear(HistoryCore *self) {
    Py_CLEAR(self->seqs);
    Py_CLEAR(self->packets);
    return 0;
}

static void HistoryCore_dealloc(HistoryCore *self) {
    PyObject_GC_UnTrack(self);
    HistoryCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* 0, or -1 with an exception set. */
static int history_add(HistoryCore *self, long long seq, PyObject *packet) {
    if (self->seqs == NULL || self->packets == NULL || !PyList_CheckExact(self->seqs) ||
        !PyList_CheckExact(self->packets)) {
        PyErr_SetString(PyExc_TypeError, "the history's slots are not set up");
        return -1;
    }
    Py_ssize_t slot = (Py_ssize_t)(seq & self->mask);
    if (slot >= PyList_GET_SIZE(self->seqs) || slot >= PyList_GET_SIZE(self->packets)) {
        PyErr_SetString(PyExc_IndexError, "the history's mask does not fit its slots");
        return -1;
    }
    PyObject *number = PyLong_FromLongLong(seq);
    if (number == NULL)
        return -1;
    Py_INCREF(packet);
    PyList_SetItem(self->seqs, slot, number);
    PyList_SetItem(self->packets, slot, packet);
    return 0;
}

static PyObject *HistoryCore_add(HistoryCore *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add(seq, packet)");
        return NULL;
    }
    long long seq = PyLong_AsLongLong(args[0]);
    if (seq == -1 && PyErr_Occurred())
        return NULL;
    if (history_add(self, seq, args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef HistoryCore_methods[] = {
    {"add", (PyCFunction)(void (*)(void))HistoryCore_add, METH_FASTCALL,
     "add(seq, packet): keep ``packet``, sent as ``seq``"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef HistoryCore_members[] = {
    {"_mask", T_LONGLONG, offsetof(HistoryCore, mask), 0, NULL},
    {"_seqs", T_OBJECT, offsetof(HistoryCore, seqs), 0, NULL},
    {"_packets", T_OBJECT, offsetof(HistoryCore, packets), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject HistoryCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._wire.HistoryCore",
    .tp_basicsize = sizeof(HistoryCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "media.rtp.SentHistory's slots and its add()",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)HistoryCore_dealloc,
    .tp_traverse = (traverseproc)HistoryCore_traverse,
    .tp_clear = (inquiry)HistoryCore_clear,
    .tp_methods = HistoryCore_methods,
    .tp_members = HistoryCore_members,
};

/* -- one peer connection's RTP out (media/aiortc_internals.py, Tap) ----------------- */

/* What Tap.send checks and uses for each packet, held here so that an RTP packet on
 * a shared socket is checked, protected and sent without Python. */
typedef struct {
    PyObject_HEAD
    PyObject *dtls;       /* aiortc's RTCDtlsTransport */
    PyObject *nominated;  /* aioice's component -> nominated pair */
    PyObject *protect;    /* Srtp: srtp_protect on the session it was made for */
    PyObject *pair;       /* the pair the address below is of */
    PyObject *route;      /* that pair's SharedPortRoute, None off a shared socket */
    PyObject *pair_sockaddr;
    long long sent_packets;
    PyObject *unprotect;  /* Srtp: srtp_unprotect on the session it was made for */
    PyObject *on_rtp;     /* where an RTP packet goes, unprotected */
    PyObject *leg;        /* on_rtp's Leg, when it is one (see leg_kind) */
} LinkCore;

static PyObject *str_tx_srtp, *str_state, *str_fd, *str_send_other, *str_forward_other,
    *str_talking, *str_last_heard, *str_stall_after, *str_tap, *one, *str_rx_srtp,
    *str_data_received, *str_inbound, *str_on_rtp, *str_on_packet, *str_on_packet_other,
    *str_forward;
static PyObject *dtls_connected;  /* the DTLS state in which packets may go out */
static PyObject *leg_type;        /* media.leg.Leg, told by leg_kind() */
static PyObject *publisher_stall; /* its PUBLISHER_STALL_SECONDS */
static double heard_every;        /* how often on_rtp lets Leg.heard look */
static PyObject *outcore_forward; /* OutCore.forward, as a type finds it */
static PyObject *incore_on_packet; /* InCore.on_packet, likewise */

static int LinkCore_traverse(LinkCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->dtls);
    Py_VISIT(self->nominated);
    Py_VISIT(self->protect);
    Py_VISIT(self->pair);
    Py_VISIT(self->route);
    Py_VISIT(self->pair_sockaddr);
    Py_VISIT(self->unprotect);
    Py_VISIT(self->on_rtp);
    Py_VISIT(self->leg);
    return 0;
}

static int LinkCore_clear(LinkCore *self) {
    Py_CLEAR(self->dtls);
    Py_CLEAR(self->nominated);
    Py_CLEAR(self->protect);
    Py_CLEAR(self->pair);
    Py_CLEAR(self->route);
    Py_CLEAR(self->pair_sockaddr);
    Py_CLEAR(self->unprotect);
    Py_CLEAR(self->on_rtp);
    Py_CLEAR(self->leg);
    return 0;
}

static void LinkCore_dealloc(LinkCore *self) {
    PyObject_GC_UnTrack(self);
    LinkCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* An RTP packet out the way Tap.send's Python would send it, when nothing changed
 * since it last did: the same SRTP session, DTLS connected, the same nominated pair,
 * on a shared socket. 1: sent; 0: not sent; 2: something changed, ask Python;
 * -1: an exception is set. */
static int link_send(LinkCore *self, PyObject *packet) {
    if (str_tx_srtp == NULL || dtls_connected == NULL || self->protect == NULL ||
        Py_TYPE(self->protect) != &SrtpType || self->route == NULL ||
        self->route == Py_None || self->dtls == NULL || self->nominated == NULL ||
        !PyDict_CheckExact(self->nominated) || self->pair_sockaddr == NULL ||
        !PyBytes_CheckExact(self->pair_sockaddr) || !PyBytes_CheckExact(packet))
        return 2;
    PyObject *tx = PyObject_GetAttr(self->dtls, str_tx_srtp);
    if (tx == NULL)
        return -1;
    Py_DECREF(tx); /* only compared */
    if (tx != ((Srtp *)self->protect)->session)
        return 2;
    PyObject *state = PyObject_GetAttr(self->dtls, str_state);
    if (state == NULL)
        return -1;
    Py_DECREF(state);
    if (state != dtls_connected)
        return 2;
    PyObject *pair = PyDict_GetItemWithError(self->nominated, one);
    if (pair == NULL && PyErr_Occurred())
        return -1;
    if (pair != self->pair)
        return 2;
    PyObject *fd_object = PyObject_GetAttr(self->route, str_fd);
    if (fd_object == NULL)
        return -1;
    long fd = PyLong_AsLong(fd_object);
    Py_DECREF(fd_object);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    Py_ssize_t sent = srtp_send((Srtp *)self->protect, (int)fd, self->pair_sockaddr, packet);
    if (sent < 0)
        return -1;
    if (sent == 0)
        return 0;
    self->sent_packets++;
    return 1;
}

/* send(packet, rtcp=False) -> bool: encrypt and send at once; False while the
 * transport is not up. RTCP, and RTP whenever something changed, take Python's
 * _send_other, which also brings what is held here up to date. */
static PyObject *LinkCore_send(LinkCore *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    Py_ssize_t given = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    if (given < 1 || given > 2) {
        PyErr_SetString(PyExc_TypeError, "send(packet, rtcp=False)");
        return NULL;
    }
    int rtcp = 0;
    if (given == 2) {
        rtcp = PyObject_IsTrue(args[1]);
        if (rtcp < 0)
            return NULL;
    }
    if (!rtcp) {
        int done = link_send(self, args[0]);
        if (done < 0)
            return NULL;
        if (done < 2)
            return PyBool_FromLong(done);
    }
    PyObject *call[3] = {(PyObject *)self, args[0], rtcp ? Py_True : Py_False};
    return PyObject_VectorcallMethod(str_send_other, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

static PyObject *LinkCore_receive(LinkCore *self, PyObject *data);

static PyMethodDef LinkCore_methods[] = {
    {"receive", (PyCFunction)LinkCore_receive, METH_O,
     "receive(data): a datagram from the peer, from its shared socket"},
    {"send", (PyCFunction)(void (*)(void))LinkCore_send, METH_FASTCALL | METH_KEYWORDS,
     "send(packet, rtcp=False) -> bool: encrypt and send at once; False while the "
     "transport is not up"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef LinkCore_members[] = {
    {"_dtls", T_OBJECT, offsetof(LinkCore, dtls), 0, NULL},
    {"_nominated", T_OBJECT, offsetof(LinkCore, nominated), 0, NULL},
    {"_protect", T_OBJECT, offsetof(LinkCore, protect), 0, NULL},
    {"_pair", T_OBJECT, offsetof(LinkCore, pair), 0, NULL},
    {"_route", T_OBJECT, offsetof(LinkCore, route), 0, NULL},
    {"_pair_sockaddr", T_OBJECT, offsetof(LinkCore, pair_sockaddr), 0, NULL},
    {"sent_packets", T_LONGLONG, offsetof(LinkCore, sent_packets), 0, NULL},
    {"_unprotect", T_OBJECT, offsetof(LinkCore, unprotect), 0, NULL},
    {"_on_rtp", T_OBJECT, offsetof(LinkCore, on_rtp), 0, NULL},
    {"_leg", T_OBJECT, offsetof(LinkCore, leg), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LinkCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._wire.LinkCore",
    .tp_basicsize = sizeof(LinkCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "media.aiortc_internals.Tap's sending state and its common case",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)LinkCore_dealloc,
    .tp_traverse = (traverseproc)LinkCore_traverse,
    .tp_clear = (inquiry)LinkCore_clear,
    .tp_methods = LinkCore_methods,
    .tp_members = LinkCore_members,
};

/* -- one subscriber's stream (media/outbound.py, OutStream) -------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *leg;
    PyObject *rewriter;
    PyObject *munger;
    PyObject *history;
    char waiting_keyframe;
    double probe_ratio;
    long long packets;
    long long octets;
    long long last_ts;
    double last_sent_at;
} OutCore;

static int OutCore_traverse(OutCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->leg);
    Py_VISIT(self->rewriter);
    Py_VISIT(self->munger);
    Py_VISIT(self->history);
    return 0;
}

static int OutCore_clear(OutCore *self) {
    Py_CLEAR(self->leg);
    Py_CLEAR(self->rewriter);
    Py_CLEAR(self->munger);
    Py_CLEAR(self->history);
    return 0;
}

static void OutCore_dealloc(OutCore *self) {
    PyObject_GC_UnTrack(self);
    OutCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *forward_other(OutCore *self, PyObject *packet, PyObject *now) {
    PyObject *call[3] = {(PyObject *)self, packet, now};
    return PyObject_VectorcallMethod(str_forward_other, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

/* 1 if the leg may be stalled (Leg.stalled decides, in Python), 0 if it cannot be,
 * -1 with an exception set. */
static int may_be_stalled(PyObject *leg, double now) {
    PyObject *talking = PyObject_GetAttr(leg, str_talking);
    if (talking == NULL)
        return -1;
    int is_talking = PyObject_IsTrue(talking);
    Py_DECREF(talking);
    if (is_talking <= 0)
        return is_talking;
    PyObject *heard = PyObject_GetAttr(leg, str_last_heard);
    if (heard == NULL)
        return -1;
    double last_heard = PyFloat_AsDouble(heard);
    Py_DECREF(heard);
    PyObject *after = PyObject_GetAttr(leg, str_stall_after);
    if (after == NULL)
        return -1;
    double stall_after = PyFloat_AsDouble(after);
    Py_DECREF(after);
    if (PyErr_Occurred())
        return -1;
    return now - last_heard > stall_after;
}

/* forward(packet, now): the subscriber's copy of ``packet``, rewritten, kept for NACKs
 * and sent. Here for a subscriber with nothing special going on (not waiting for a
 * keyframe, no temporal layers to drop, no probe, not possibly stalled, its leg's
 * tap sending as before); anything else takes the Python _forward_other, which is
 * the whole of the logic. */
static PyObject *OutCore_forward(OutCore *self, PyObject *const *given, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    PyObject *args[2];
    if (two_args(given, nargs, kwnames, "packet", "now", args) < 0)
        return NULL;
    PyObject *packet = args[0];
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->waiting_keyframe || (self->munger != NULL && self->munger != Py_None) ||
        self->probe_ratio != 0.0 || self->leg == NULL || self->rewriter == NULL ||
        !PyObject_TypeCheck(self->rewriter, &RewriterCoreType) || self->history == NULL ||
        !PyObject_TypeCheck(self->history, &HistoryCoreType))
        return forward_other(self, packet, args[1]);
    int stalled = may_be_stalled(self->leg, now);
    if (stalled < 0)
        return NULL;
    if (stalled)
        return forward_other(self, packet, args[1]);
    PyObject *tap = PyObject_GetAttr(self->leg, str_tap);
    if (tap == NULL)
        return NULL;
    if (!PyObject_TypeCheck(tap, &LinkCoreType)) {
        Py_DECREF(tap);
        return forward_other(self, packet, args[1]);
    }
    PyObject *out = RewriterCore_rewrite((RewriterCore *)self->rewriter, packet);
    if (out == NULL || out == Py_None || !PyBytes_CheckExact(out) || PyBytes_GET_SIZE(out) < 12) {
        Py_DECREF(tap);
        if (out == NULL)
            return NULL;
        Py_DECREF(out);
        Py_RETURN_NONE; /* dropped */
    }
    const unsigned char *o = (const unsigned char *)PyBytes_AS_STRING(out);
    long long seq = (o[2] << 8) | o[3];
    long long ts = ((long long)o[4] << 24) | (o[5] << 16) | (o[6] << 8) | o[7];
    if (history_add((HistoryCore *)self->history, seq, out) < 0) {
        Py_DECREF(tap);
        Py_DECREF(out);
        return NULL;
    }
    int sent = link_send((LinkCore *)tap, out);
    if (sent == 2) {
        PyObject *call[3] = {tap, out, Py_False};
        PyObject *result = PyObject_VectorcallMethod(
            str_send_other, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        sent = result == NULL ? -1 : PyObject_IsTrue(result);
        Py_XDECREF(result);
    }
    Py_DECREF(tap);
    if (sent < 0) {
        Py_DECREF(out);
        return NULL;
    }
    if (sent) {
        self->packets++;
        self->octets += PyBytes_GET_SIZE(out) - 12;
        self->last_ts = ts;
        self->last_sent_at = now;
    }
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyMethodDef OutCore_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))OutCore_forward, METH_FASTCALL | METH_KEYWORDS,
     "forward(packet, now): the subscriber's copy of packet, rewritten, kept and sent"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef OutCore_members[] = {
    {"leg", T_OBJECT, offsetof(OutCore, leg), 0, NULL},
    {"rewriter", T_OBJECT, offsetof(OutCore, rewriter), 0, NULL},
    {"munger", T_OBJECT, offsetof(OutCore, munger), 0, NULL},
    {"history", T_OBJECT, offsetof(OutCore, history), 0, NULL},
    {"waiting_keyframe", T_BOOL, offsetof(OutCore, waiting_keyframe), 0, NULL},
    {"probe_ratio", T_DOUBLE, offsetof(OutCore, probe_ratio), 0, NULL},
    {"packets", T_LONGLONG, offsetof(OutCore, packets), 0, NULL},
    {"octets", T_LONGLONG, offsetof(OutCore, octets), 0, NULL},
    {"last_ts", T_LONGLONG, offsetof(OutCore, last_ts), 0, NULL},
    {"last_sent_at", T_DOUBLE, offsetof(OutCore, last_sent_at), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject OutCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._wire.OutCore",
    .tp_basicsize = sizeof(OutCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "media.outbound.OutStream's per-packet state and its common case",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)OutCore_dealloc,
    .tp_traverse = (traverseproc)OutCore_traverse,
    .tp_clear = (inquiry)OutCore_clear,
    .tp_methods = OutCore_methods,
    .tp_members = OutCore_members,
};


/* -- one published stream (media/inbound.py, InStream) ------------------------------ */

typedef struct {
    PyObject_HEAD
    long long base_seq;
    long long max_seq;
    long long cycles;
    long long received;
    long long octets;
    long long clock_rate;
    double last_arrival;
    double first_arrival;
    double jitter;
    PyObject *transit;     /* None before the first packet, then a float */
    PyObject *last_packet; /* the newest in sequence */
    PyObject *missing;     /* lost seq -> times asked for */
    PyObject *outs;        /* its subscribers' OutStreams */
    PyObject *joining;     /* subscribers waiting to move onto it */
    char watch_size;
} InCore;

static int InCore_traverse(InCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->transit);
    Py_VISIT(self->last_packet);
    Py_VISIT(self->missing);
    Py_VISIT(self->outs);
    Py_VISIT(self->joining);
    return 0;
}

static int InCore_clear(InCore *self) {
    Py_CLEAR(self->transit);
    Py_CLEAR(self->last_packet);
    Py_CLEAR(self->missing);
    Py_CLEAR(self->outs);
    Py_CLEAR(self->joining);
    return 0;
}

static void InCore_dealloc(InCore *self) {
    PyObject_GC_UnTrack(self);
    InCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *call_method2(PyObject *name, PyObject *self, PyObject *a, PyObject *b) {
    PyObject *call[3] = {self, a, b};
    return PyObject_VectorcallMethod(name, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static PyObject *OutCore_forward(OutCore *self, PyObject *const *given, Py_ssize_t nargs,
                                 PyObject *kwnames);

/* The next packet in sequence of a stream with nothing else going on (no packet
 * missing, no size to watch, nobody moving onto it): its receive statistics, then
 * each subscriber's copy. Anything else takes the Python _on_packet_other, which is
 * the whole of the logic. 0, or -1 with an exception set. */
static int in_packet(InCore *self, PyObject *packet, PyObject *now_object, double now) {
    int other = !PyBytes_CheckExact(packet) || PyBytes_GET_SIZE(packet) < 12 ||
                self->base_seq < 0 || self->watch_size || self->missing == NULL ||
                !PyDict_CheckExact(self->missing) || PyDict_GET_SIZE(self->missing) ||
                self->joining == NULL || !PyList_CheckExact(self->joining) ||
                PyList_GET_SIZE(self->joining) || self->outs == NULL ||
                !PyList_CheckExact(self->outs) || self->transit == NULL ||
                !PyFloat_CheckExact(self->transit);
    const unsigned char *p = other ? NULL : (const unsigned char *)PyBytes_AS_STRING(packet);
    long long seq = other ? 0 : (p[2] << 8) | p[3];
    if (other || ((seq - self->max_seq) & 0xFFFF) != 1) {
        PyObject *result = call_method2(str_on_packet_other, (PyObject *)self, packet, now_object);
        Py_XDECREF(result);
        return result == NULL ? -1 : 0;
    }
    long long ts = ((long long)p[4] << 24) | (p[5] << 16) | (p[6] << 8) | p[7];
    if (seq < self->max_seq)
        self->cycles += 65536;
    self->max_seq = seq;
    Py_INCREF(packet);
    Py_SETREF(self->last_packet, packet);
    self->last_arrival = now;
    if (!self->received)
        self->first_arrival = now;
    self->received++;
    double transit = now * (double)self->clock_rate - (double)ts;
    self->jitter += (fabs(transit - PyFloat_AS_DOUBLE(self->transit)) - self->jitter) / 16;
    PyObject *transit_object = PyFloat_FromDouble(transit);
    if (transit_object == NULL)
        return -1;
    Py_SETREF(self->transit, transit_object);
    self->octets += PyBytes_GET_SIZE(packet);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(self->outs); i++) {
        PyObject *out = PyList_GET_ITEM(self->outs, i);
        Py_INCREF(out);
        PyObject *args[2] = {packet, now_object}, *result;
        if (_PyType_Lookup(Py_TYPE(out), str_forward) == outcore_forward)
            result = OutCore_forward((OutCore *)out, args, 2, NULL);
        else
            result = call_method2(str_forward, out, packet, now_object);
        Py_DECREF(out);
        if (result == NULL)
            return -1;
        Py_DECREF(result);
    }
    return 0;
}

static PyObject *InCore_on_packet(InCore *self, PyObject *const *given, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    PyObject *args[2];
    if (two_args(given, nargs, kwnames, "packet", "now", args) < 0)
        return NULL;
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (in_packet(self, args[0], args[1], now) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef InCore_methods[] = {
    {"on_packet", (PyCFunction)(void (*)(void))InCore_on_packet, METH_FASTCALL | METH_KEYWORDS,
     "on_packet(packet, now): a packet of this stream, unprotected, arrived at now"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef InCore_members[] = {
    {"base_seq", T_LONGLONG, offsetof(InCore, base_seq), 0, NULL},
    {"max_seq", T_LONGLONG, offsetof(InCore, max_seq), 0, NULL},
    {"cycles", T_LONGLONG, offsetof(InCore, cycles), 0, NULL},
    {"received", T_LONGLONG, offsetof(InCore, received), 0, NULL},
    {"octets", T_LONGLONG, offsetof(InCore, octets), 0, NULL},
    {"clock_rate", T_LONGLONG, offsetof(InCore, clock_rate), 0, NULL},
    {"last_arrival", T_DOUBLE, offsetof(InCore, last_arrival), 0, NULL},
    {"first_arrival", T_DOUBLE, offsetof(InCore, first_arrival), 0, NULL},
    {"jitter", T_DOUBLE, offsetof(InCore, jitter), 0, NULL},
    {"transit", T_OBJECT, offsetof(InCore, transit), 0, NULL},
    {"last_packet", T_OBJECT, offsetof(InCore, last_packet), 0, NULL},
    {"missing", T_OBJECT, offsetof(InCore, missing), 0, NULL},
    {"outs", T_OBJECT, offsetof(InCore, outs), 0, NULL},
    {"joining", T_OBJECT, offsetof(InCore, joining), 0, NULL},
    {"watch_size", T_BOOL, offsetof(InCore, watch_size), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject InCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._wire.InCore",
    .tp_basicsize = sizeof(InCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "media.inbound.InStream's per-packet state and its common case",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)InCore_dealloc,
    .tp_traverse = (traverseproc)InCore_traverse,
    .tp_clear = (inquiry)InCore_clear,
    .tp_methods = InCore_methods,
    .tp_members = InCore_members,
};

/* -- a packet in (media/leg.py, Leg.on_rtp; media/aiortc_internals.py, Tap) -------- */

static double monotonic_now(void) {
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at); /* time.monotonic()'s clock */
    return (double)at.tv_sec + (double)at.tv_nsec * 1e-9;
}

static PyObject *call_method1(PyObject *name, PyObject *self, PyObject *a) {
    PyObject *call[2] = {self, a};
    return PyObject_VectorcallMethod(name, call, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* Leg.on_rtp for a packet of a stream it knows, heard from lately (leg_kind() says
 * how lately); anything else takes the Python method. 0, or -1 with an exception. */
static int leg_rtp(PyObject *leg, PyObject *packet) {
    double now = monotonic_now();
    PyObject *heard = PyObject_GetAttr(leg, str_last_heard);
    if (heard == NULL)
        return -1;
    double last_heard = PyFloat_AsDouble(heard);
    Py_DECREF(heard);
    PyObject *talking = PyObject_GetAttr(leg, str_talking);
    if (talking == NULL)
        return -1;
    int is_talking = PyObject_IsTrue(talking);
    Py_DECREF(talking);
    if (is_talking < 0 || PyErr_Occurred())
        return -1;
    PyObject *stream = NULL;
    if (is_talking && now - last_heard <= heard_every && PyBytes_CheckExact(packet) &&
        PyBytes_GET_SIZE(packet) >= 12) {
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packet);
        unsigned long ssrc = ((unsigned long)p[8] << 24) | (p[9] << 16) | (p[10] << 8) | p[11];
        PyObject *inbound = PyObject_GetAttr(leg, str_inbound);
        if (inbound == NULL)
            return -1;
        PyObject *key = PyLong_FromUnsignedLong(ssrc);
        if (key == NULL) {
            Py_DECREF(inbound);
            return -1;
        }
        stream = PyDict_CheckExact(inbound) ? PyDict_GetItemWithError(inbound, key) : NULL;
        Py_XINCREF(stream);
        Py_DECREF(key);
        Py_DECREF(inbound);
        if (stream == NULL && PyErr_Occurred())
            return -1;
    }
    if (stream == NULL || _PyType_Lookup(Py_TYPE(stream), str_on_packet) != incore_on_packet) {
        Py_XDECREF(stream);
        PyObject *result = call_method1(str_on_rtp, leg, packet);
        Py_XDECREF(result);
        return result == NULL ? -1 : 0;
    }
    /* A publisher sends continuously, so a short silence already means a dead path. */
    if (PyObject_SetAttr(leg, str_stall_after, publisher_stall) < 0) {
        Py_DECREF(stream);
        return -1;
    }
    PyObject *now_object = PyFloat_FromDouble(now);
    int done = now_object == NULL ? -1 : in_packet((InCore *)stream, packet, now_object, now);
    Py_XDECREF(now_object);
    Py_DECREF(stream);
    return done;
}

/* receive(data): a datagram from the peer, as its shared socket's route hands it
 * over. An SRTP packet of the current session is unprotected here and goes on to the
 * leg; anything else (DTLS, RTCP, a new session's first packet) takes the Python
 * _data_received, which is the whole of the logic. */
static PyObject *LinkCore_receive(LinkCore *self, PyObject *data) {
    if (str_rx_srtp == NULL || !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) < 2 ||
        self->dtls == NULL)
        goto other;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    if (d[0] < 128 || d[0] > 191 || (d[1] >= 192 && d[1] <= 223))
        goto other; /* not RTP (RFC 7983), or RTCP (RFC 5761) */
    PyObject *rx = PyObject_GetAttr(self->dtls, str_rx_srtp);
    if (rx == NULL)
        return NULL;
    Py_DECREF(rx); /* only compared */
    if (self->unprotect == NULL || Py_TYPE(self->unprotect) != &SrtpType ||
        ((Srtp *)self->unprotect)->session != rx || rx == Py_None)
        goto other;
    PyObject *packet = srtp_process((Srtp *)self->unprotect, d, PyBytes_GET_SIZE(data));
    if (packet == NULL)
        return NULL;
    if (packet == Py_None) {
        Py_DECREF(packet);
        Py_RETURN_NONE; /* forged, replayed or damaged: dropped */
    }
    int done;
    if (self->leg != NULL && leg_type != NULL && (PyObject *)Py_TYPE(self->leg) == leg_type)
        done = leg_rtp(self->leg, packet);
    else if (self->on_rtp != NULL) {
        PyObject *result = PyObject_CallOneArg(self->on_rtp, packet);
        Py_XDECREF(result);
        done = result == NULL ? -1 : 0;
    } else
        done = 0;
    Py_DECREF(packet);
    if (done < 0)
        return NULL;
    Py_RETURN_NONE;
other:
    return call_method2(str_data_received, (PyObject *)self, data, one);
}

/* leg_kind(leg_type, publisher_stall, heard_every): what Leg.on_rtp is, for receive() */
static PyObject *wire_leg_kind(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *kind, *stall;
    double every;
    if (!PyArg_ParseTuple(args, "O!O!d", &PyType_Type, &kind, &PyFloat_Type, &stall, &every))
        return NULL;
    Py_INCREF(kind);
    Py_XSETREF(leg_type, kind);
    Py_INCREF(stall);
    Py_XSETREF(publisher_stall, stall);
    heard_every = every;
    Py_RETURN_NONE;
}

/* dtls_names(rx_srtp, tx_srtp, state, connected): the names aiortc's RTCDtlsTransport
 * keeps its SRTP sessions and its state under, and the state in which packets may go
 * out (media/aiortc_internals.py, the one place that knows aiortc's internals, tells
 * them); until then every packet takes Python. */
static PyObject *wire_dtls_names(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *rx, *tx, *state, *connected;
    if (!PyArg_ParseTuple(args, "UUUO", &rx, &tx, &state, &connected))
        return NULL;
    Py_INCREF(connected);
    Py_XSETREF(dtls_connected, connected);
    Py_INCREF(rx);
    Py_INCREF(tx);
    Py_INCREF(state);
    PyUnicode_InternInPlace(&rx);
    PyUnicode_InternInPlace(&tx);
    PyUnicode_InternInPlace(&state);
    Py_XSETREF(str_rx_srtp, rx);
    Py_XSETREF(str_tx_srtp, tx);
    Py_XSETREF(str_state, state);
    Py_RETURN_NONE;
}

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
    {"dtls_names", wire_dtls_names, METH_VARARGS,
     "dtls_names(rx_srtp, tx_srtp, state, connected): where aiortc's DTLS transport keeps "
     "them, and the state in which packets may go out"},
    {"leg_kind", wire_leg_kind, METH_VARARGS,
     "leg_kind(Leg, publisher_stall_seconds, heard_every_seconds): Leg.on_rtp, as receive() "
     "follows it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wire_module = {
    PyModuleDef_HEAD_INIT, .m_name = "media._wire",
    .m_doc = "libsrtp calls and sends without Python per packet", .m_size = -1,
    .m_methods = wire_methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    if (PyType_Ready(&SrtpType) < 0 || PyType_Ready(&RewriterCoreType) < 0 ||
        PyType_Ready(&HistoryCoreType) < 0 || PyType_Ready(&LinkCoreType) < 0 ||
        PyType_Ready(&OutCoreType) < 0 || PyType_Ready(&InCoreType) < 0)
        return NULL;
    if (!(str_fd = PyUnicode_InternFromString("fd")) ||
        !(str_send_other = PyUnicode_InternFromString("_send_other")) ||
        !(str_forward_other = PyUnicode_InternFromString("_forward_other")) ||
        !(str_talking = PyUnicode_InternFromString("talking")) ||
        !(str_last_heard = PyUnicode_InternFromString("last_heard")) ||
        !(str_stall_after = PyUnicode_InternFromString("stall_after")) ||
        !(str_tap = PyUnicode_InternFromString("tap")) || !(one = PyLong_FromLong(1)) ||
        !(str_data_received = PyUnicode_InternFromString("_data_received")) ||
        !(str_inbound = PyUnicode_InternFromString("inbound")) ||
        !(str_on_rtp = PyUnicode_InternFromString("on_rtp")) ||
        !(str_on_packet = PyUnicode_InternFromString("on_packet")) ||
        !(str_on_packet_other = PyUnicode_InternFromString("_on_packet_other")) ||
        !(str_forward = PyUnicode_InternFromString("forward")))
        return NULL;
    outcore_forward = _PyType_Lookup(&OutCoreType, str_forward);    /* borrowed, */
    incore_on_packet = _PyType_Lookup(&InCoreType, str_on_packet);  /* kept by the types */
    if (outcore_forward == NULL || incore_on_packet == NULL)
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
    if (PyModule_AddObjectRef(module, "RewriterCore", (PyObject *)&RewriterCoreType) < 0 ||
        PyModule_AddObjectRef(module, "HistoryCore", (PyObject *)&HistoryCoreType) < 0 ||
        PyModule_AddObjectRef(module, "LinkCore", (PyObject *)&LinkCoreType) < 0 ||
        PyModule_AddObjectRef(module, "OutCore", (PyObject *)&OutCoreType) < 0 ||
        PyModule_AddObjectRef(module, "InCore", (PyObject *)&InCoreType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
