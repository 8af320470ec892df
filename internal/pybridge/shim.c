/* shim.c: everything gowsgi does with the CPython C API. See shim.h for the conventions.
 * Module state below is only touched with the GIL held. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "shim.h"

typedef struct gw_buf {
	char *p;
	size_t len, cap;
} gw_buf;

struct gw_thread {
	PyThreadState *ts;
	unsigned long thread_id;     /* the OS thread ident PyThreadState_SetAsyncExc takes */
	unsigned long long serial;   /* the current request, 0 between requests (GIL held) */
	PyObject *environ; /* the request's environ (for error messages) */
	PyObject *sr;      /* the request's start_response, a gw_sr */
	PyObject *result;  /* what the app returned; close() is called on it */
	PyObject *iter;    /* iterator over result, or NULL when seq is used */
	PyObject *seq;     /* borrowed: result itself when it is an exact list or tuple */
	Py_ssize_t idx;    /* next index into seq */
	PyObject *chunk;   /* the chunk handed to Go, kept alive until the next call */
	int up_fd;
	gw_buf head;
	gw_buf joined;     /* the items of a short list body, joined (join_rest) */
	char err[512];
};

/* Module state (GIL held). */
static PyThreadState *gw_main_ts;
static PyObject *gw_app, *gw_glue;
static PyObject *gw_RequestTimeout;
static PyObject *gw_FileWrapper, *gw_make_input, *gw_log_exc, *gw_BytesIO;
static PyObject *gw_version;
static int gw_multithread, gw_multiprocess;
static PyObject *k_close, *k_filelike, *k_fileno, *k_tell;
static PyObject *k_version, *k_input, *k_errors, *k_multithread, *k_multiprocess, *k_run_once,
	*k_file_wrapper, *k_input_terminated, *k_method, *k_path;

/* ---- small helpers (no GIL needed) ---- */

static int write_all(int fd, const void *p, size_t n) {
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n) {
	char *c = p;
	while (n > 0) {
		ssize_t r = read(fd, c, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

static void put_u32(unsigned char *p, uint32_t v) {
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = (v >> 24) & 0xff;
}

static uint32_t get_u32(const unsigned char *p) {
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int buf_reserve(gw_buf *b, size_t more) {
	if (b->len + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 512;
	while (cap < b->len + more)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		PyErr_NoMemory();
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

static int buf_put(gw_buf *b, const void *p, size_t n) {
	if (buf_reserve(b, n) < 0)
		return -1;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

/* ---- head packing (GIL held) ---- */

/* pack_str appends s as latin-1 bytes with a u16 (wide=0) or u32 (wide=1) length prefix.
 * Returns -1 with TypeError or ValueError set when s is not a latin-1 str. */
static int pack_str(gw_buf *b, PyObject *s, int wide, const char *what) {
	if (!PyUnicode_Check(s)) {
		PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", what, Py_TYPE(s)->tp_name);
		return -1;
	}
#if PY_VERSION_HEX < 0x030C0000
	if (PyUnicode_READY(s) < 0)
		return -1;
#endif
	if (PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
		PyErr_Format(PyExc_ValueError, "%s %.200R is not latin-1", what, s);
		return -1;
	}
	Py_ssize_t n = PyUnicode_GET_LENGTH(s);
	unsigned char len[4];
	if (wide) {
		put_u32(len, (uint32_t)n);
	} else {
		if (n > 0xffff) {
			PyErr_Format(PyExc_ValueError, "%s is too long (%zd characters)", what, n);
			return -1;
		}
		len[0] = n & 0xff;
		len[1] = (n >> 8) & 0xff;
	}
	if (buf_put(b, len, wide ? 4 : 2) < 0)
		return -1;
	return buf_put(b, PyUnicode_DATA(s), (size_t)n);
}

/* pack_head fills b with the packed status and headers (frame.PackedHead). */
static int pack_head(gw_buf *b, PyObject *status, PyObject *headers) {
	b->len = 0;
	if (pack_str(b, status, 0, "status") < 0)
		return -1;
	if (!PyList_Check(headers) && !PyTuple_Check(headers)) {
		PyErr_Format(PyExc_TypeError, "response headers must be a list, not %.100s",
		             Py_TYPE(headers)->tp_name);
		return -1;
	}
	Py_ssize_t n = PySequence_Fast_GET_SIZE(headers);
	if (n > 0xffff) {
		PyErr_SetString(PyExc_ValueError, "too many response headers");
		return -1;
	}
	unsigned char cnt[2] = {n & 0xff, (n >> 8) & 0xff};
	if (buf_put(b, cnt, 2) < 0)
		return -1;
	for (Py_ssize_t i = 0; i < n; i++) {
		PyObject *item = PySequence_Fast_GET_ITEM(headers, i); /* borrowed */
		if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
			PyErr_Format(PyExc_TypeError, "response header %zd must be a (name, value) tuple, not %.200R",
			             i, item);
			return -1;
		}
		if (pack_str(b, PyTuple_GET_ITEM(item, 0), 0, "header name") < 0 ||
		    pack_str(b, PyTuple_GET_ITEM(item, 1), 1, "header value") < 0)
			return -1;
	}
	return 0;
}

/* ---- error logging (GIL held) ---- */

/* log_error writes what and the pending exception's traceback to the error log through the
 * glue, stores a one-line reason in t->err (or err when t is NULL), and clears the error. */
static void log_error_to(char *dst, size_t dstlen, PyObject *msg) {
	PyObject *et, *ev, *etb;
	PyErr_Fetch(&et, &ev, &etb);
	PyErr_NormalizeException(&et, &ev, &etb);
	if (ev && etb)
		PyException_SetTraceback(ev, etb);
	PyObject *r = NULL;
	if (gw_log_exc && msg)
		r = PyObject_CallFunctionObjArgs(gw_log_exc, msg, et ? et : Py_None, ev ? ev : Py_None,
		                                 etb ? etb : Py_None, NULL);
	const char *reason = NULL;
	if (r && PyUnicode_Check(r))
		reason = PyUnicode_AsUTF8(r);
	if (!reason) {
		PyErr_Clear();
		reason = et ? ((PyTypeObject *)et)->tp_name : "unknown error";
	}
	snprintf(dst, dstlen, "%s", reason);
	Py_XDECREF(r);
	Py_XDECREF(et);
	Py_XDECREF(ev);
	Py_XDECREF(etb);
	PyErr_Clear();
}

static void log_error(gw_thread *t, const char *what) {
	PyObject *m = NULL, *p = NULL;
	if (t->environ) {
		m = PyDict_GetItemWithError(t->environ, k_method); /* borrowed */
		p = PyDict_GetItemWithError(t->environ, k_path);   /* borrowed */
	}
	/* Keep the pending exception: build the message with it set aside. */
	PyObject *et, *ev, *etb;
	PyErr_Fetch(&et, &ev, &etb);
	PyObject *msg = PyUnicode_FromFormat("%s %S %S", what, m ? m : Py_None, p ? p : Py_None);
	if (!msg)
		PyErr_Clear();
	PyErr_Restore(et, ev, etb);
	log_error_to(t->err, sizeof t->err, msg);
	Py_XDECREF(msg);
}

/* ---- start_response (PEP 3333), a C type: the app calls it on every request ---- */

/* send_head writes write()'s head message (GW_UP_HEAD) to the thread's up pipe. */
static int send_head(int up, PyObject *status, PyObject *headers) {
	gw_buf b = {0};
	if (buf_reserve(&b, 5) < 0)
		return -1;
	b.len = 5;
	gw_buf h = {0};
	if (pack_head(&h, status, headers) < 0 || buf_put(&b, h.p, h.len) < 0) {
		free(h.p);
		free(b.p);
		return -1;
	}
	free(h.p);
	b.p[0] = GW_UP_HEAD;
	put_u32((unsigned char *)b.p + 1, (uint32_t)(b.len - 5));
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = write_all(up, b.p, b.len);
	Py_END_ALLOW_THREADS
	free(b.p);
	if (rc < 0) {
		PyErr_SetString(PyExc_OSError, "write(): the connection to the front is gone");
		return -1;
	}
	return 0;
}

/* send_data writes the bytes of data to the thread's up pipe as GW_UP_DATA messages. */
static int send_data(int up, PyObject *data) {
	const char *p = PyBytes_AS_STRING(data);
	size_t n = (size_t)PyBytes_GET_SIZE(data);
	int rc = 0;
	Py_BEGIN_ALLOW_THREADS
	while (n > 0 && rc == 0) {
		size_t part = n > (1u << 20) ? (1u << 20) : n;
		unsigned char hdr[5];
		hdr[0] = GW_UP_DATA;
		put_u32(hdr + 1, (uint32_t)part);
		rc = write_all(up, hdr, 5);
		if (rc == 0)
			rc = write_all(up, p, part);
		p += part;
		n -= part;
	}
	Py_END_ALLOW_THREADS
	if (rc < 0) {
		PyErr_SetString(PyExc_OSError, "write(): the connection to the front is gone");
		return -1;
	}
	return 0;
}

/* gw_sr is the start_response callable of one request. gw_call reads status and headers
 * after the app returns, and sets sent once the head has gone out with the first chunk;
 * write() sends the head itself. A Python class did the same for 0.4 µs more per request
 * (BenchmarkCall). */
typedef struct {
	PyObject_HEAD
	vectorcallfunc vectorcall;
	PyObject *status;  /* str; NULL until start_response() */
	PyObject *headers; /* list; NULL until start_response() */
	int up_fd;
	/* done is set when the request is over: a write() or body read from a thread the app
	 * left behind must fail, not reach the thread's next request through the same pipes. */
	char sent, done;
} gw_sr;

static PyObject *sr_write(PyObject *self, PyObject *data) {
	gw_sr *sr = (gw_sr *)self;
	if (sr->done) {
		PyErr_SetString(PyExc_OSError, "write() called after the response ended");
		return NULL;
	}
	if (!sr->status) {
		PyErr_SetString(PyExc_AssertionError, "write() called before start_response()");
		return NULL;
	}
	if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
		PyErr_Format(PyExc_TypeError, "write() argument must be bytes, not %.100s", Py_TYPE(data)->tp_name);
		return NULL;
	}
	/* A copy of a mutable buffer: another thread may change it while the GIL is released. */
	PyObject *b = PyBytes_FromObject(data);
	if (!b)
		return NULL;
	int rc = 0;
	if (!sr->sent) {
		rc = send_head(sr->up_fd, sr->status, sr->headers);
		if (rc == 0)
			sr->sent = 1;
	}
	if (rc == 0 && PyBytes_GET_SIZE(b) > 0)
		rc = send_data(sr->up_fd, b);
	Py_DECREF(b);
	if (rc < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyMethodDef sr_write_def = {"write", sr_write, METH_O, "write(data): send data now (PEP 3333)"};

/* sr_arg stores one argument of start_response(status, headers, exc_info=None). */
static int sr_arg(PyObject **slot, PyObject *v, const char *name) {
	if (*slot) {
		PyErr_Format(PyExc_TypeError, "start_response() got multiple values for argument '%s'", name);
		return -1;
	}
	*slot = v;
	return 0;
}

static PyObject *sr_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
	gw_sr *sr = (gw_sr *)self;
	static const char *names[] = {"status", "headers", "exc_info"};
	PyObject *a[3] = {NULL, NULL, NULL};
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	if (nargs > 3) {
		PyErr_Format(PyExc_TypeError, "start_response() takes at most 3 arguments (%zd given)", nargs);
		return NULL;
	}
	for (Py_ssize_t i = 0; i < nargs; i++)
		a[i] = args[i];
	Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	for (Py_ssize_t i = 0; i < nkw; i++) {
		PyObject *k = PyTuple_GET_ITEM(kwnames, i);
		int j = 0;
		while (j < 3 && PyUnicode_CompareWithASCIIString(k, names[j]) != 0)
			j++;
		if (j == 3) {
			PyErr_Format(PyExc_TypeError, "start_response() got an unexpected keyword argument '%S'", k);
			return NULL;
		}
		if (sr_arg(&a[j], args[nargs + i], names[j]) < 0)
			return NULL;
	}
	if (!a[0] || !a[1]) {
		PyErr_Format(PyExc_TypeError, "start_response() missing required argument '%s'", a[0] ? "headers" : "status");
		return NULL;
	}
	PyObject *status = a[0], *headers = a[1], *exc_info = a[2];
	if (exc_info && exc_info != Py_None) {
		if (sr->sent) { /* too late to replace the head: re-raise the app's error */
			PyObject *v = PySequence_GetItem(exc_info, 1);
			PyObject *tb = v ? PySequence_GetItem(exc_info, 2) : NULL;
			if (tb && !PyExceptionInstance_Check(v))
				PyErr_SetString(PyExc_TypeError, "exc_info[1] must be an exception");
			else if (tb && PyException_SetTraceback(v, tb) == 0)
				PyErr_SetObject((PyObject *)Py_TYPE(v), v);
			Py_XDECREF(v);
			Py_XDECREF(tb);
			return NULL;
		}
	} else if (sr->status) {
		PyErr_SetString(PyExc_AssertionError, "start_response() called a second time without exc_info");
		return NULL;
	}
	if (!PyUnicode_CheckExact(status)) {
		PyErr_Format(PyExc_TypeError, "status must be str, not %.100s", Py_TYPE(status)->tp_name);
		return NULL;
	}
	if (!PyList_CheckExact(headers)) {
		PyErr_Format(PyExc_TypeError, "response headers must be a list, not %.100s", Py_TYPE(headers)->tp_name);
		return NULL;
	}
	Py_INCREF(status);
	Py_XSETREF(sr->status, status);
	Py_INCREF(headers);
	Py_XSETREF(sr->headers, headers);
	return PyCFunction_New(&sr_write_def, self);
}

static int sr_traverse(PyObject *self, visitproc visit, void *arg) {
	gw_sr *sr = (gw_sr *)self;
	Py_VISIT(sr->status);
	Py_VISIT(sr->headers);
	return 0;
}

static int sr_clear(PyObject *self) {
	gw_sr *sr = (gw_sr *)self;
	Py_CLEAR(sr->status);
	Py_CLEAR(sr->headers);
	return 0;
}

static void sr_dealloc(PyObject *self) {
	PyObject_GC_UnTrack(self);
	sr_clear(self);
	PyObject_GC_Del(self);
}

static PyMemberDef sr_members[] = {
	{"status", T_OBJECT, offsetof(gw_sr, status), READONLY, NULL},
	{"headers", T_OBJECT, offsetof(gw_sr, headers), READONLY, NULL},
	{"sent", T_BOOL, offsetof(gw_sr, sent), READONLY, NULL},
	{"done", T_BOOL, offsetof(gw_sr, done), READONLY, NULL},
	{NULL},
};

static PyTypeObject gw_sr_type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "gowsgi.StartResponse",
	.tp_basicsize = sizeof(gw_sr),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
	.tp_doc = "start_response(status, headers, exc_info=None) of one request (PEP 3333)",
	.tp_vectorcall_offset = offsetof(gw_sr, vectorcall),
	.tp_call = PyVectorcall_Call,
	.tp_traverse = sr_traverse,
	.tp_clear = sr_clear,
	.tp_dealloc = sr_dealloc,
	.tp_members = sr_members,
};

static PyObject *sr_new(int up_fd) {
	gw_sr *sr = PyObject_GC_New(gw_sr, &gw_sr_type);
	if (!sr)
		return NULL;
	sr->vectorcall = sr_call;
	sr->status = sr->headers = NULL;
	sr->up_fd = up_fd;
	sr->sent = sr->done = 0;
	PyObject_GC_Track(sr);
	return (PyObject *)sr;
}

/* ---- the _gowsgi builtin module: what glue.py calls ---- */

static PyObject *py_read_body(PyObject *self, PyObject *args) {
	int up, body;
	Py_buffer buf;
	if (!PyArg_ParseTuple(args, "iiw*", &up, &body, &buf))
		return NULL;
	size_t want = (size_t)buf.len;
	if (want > (1u << 20))
		want = 1u << 20;
	uint32_t got = 0;
	int failed = 0;
	Py_BEGIN_ALLOW_THREADS
	unsigned char msg[5];
	msg[0] = GW_UP_WANT;
	put_u32(msg + 1, (uint32_t)want);
	unsigned char hdr[4];
	if (write_all(up, msg, 5) < 0 || read_all(body, hdr, 4) < 0) {
		failed = 1;
	} else {
		got = get_u32(hdr);
		if (got == GW_BODY_ABORT || got > want || (got > 0 && read_all(body, buf.buf, got) < 0))
			failed = 1;
	}
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&buf);
	if (failed) {
		PyErr_SetString(PyExc_OSError, "request body unavailable: the client disconnected or the request was cancelled");
		return NULL;
	}
	return PyLong_FromUnsignedLong(got);
}

static PyMethodDef gw_methods[] = {
	{"read_body", py_read_body, METH_VARARGS, "read_body(up_fd, body_fd, buffer) -> n"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef gw_moduledef = {
	PyModuleDef_HEAD_INIT, "_gowsgi", "gowsgi worker internals", -1, gw_methods,
	NULL, NULL, NULL, NULL,
};

static PyObject *gw_module_init(void) { return PyModule_Create(&gw_moduledef); }

/* ---- interpreter lifecycle (main thread) ---- */

static PyObject *intern(const char *s) { return PyUnicode_InternFromString(s); }

static char *dup_err(const char *what, const char *detail) {
	size_t n = strlen(what) + (detail ? strlen(detail) : 0) + 3;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
	return s;
}

static PyObject *glue_attr(const char *name) {
	PyObject *o = PyObject_GetAttrString(gw_glue, name);
	return o;
}

int gw_init(const char *glue, size_t glue_len, const char *paths, size_t paths_len,
            int multithread, int multiprocess, char **err) {
	(void)glue_len;
	if (PyImport_AppendInittab("_gowsgi", gw_module_init) < 0) {
		*err = dup_err("register _gowsgi module", NULL);
		return -1;
	}
	PyConfig config;
	PyConfig_InitPythonConfig(&config);
	config.install_signal_handlers = 0;
	config.parse_argv = 0;
	PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, "python3");
	if (!PyStatus_Exception(st)) {
		char *argv[] = {"gowsgi", NULL};
		st = PyConfig_SetBytesArgv(&config, 1, argv);
	}
	if (!PyStatus_Exception(st))
		st = Py_InitializeFromConfig(&config);
	PyConfig_Clear(&config);
	if (PyStatus_Exception(st)) {
		*err = dup_err("initialize Python", st.err_msg);
		return -1;
	}
	gw_multithread = multithread;
	gw_multiprocess = multiprocess;

	PyObject *syspath = PySys_GetObject("path"); /* borrowed */
	Py_ssize_t at = 0;
	for (size_t i = 0; i < paths_len;) {
		size_t n = strnlen(paths + i, paths_len - i);
		PyObject *s = PyUnicode_DecodeFSDefaultAndSize(paths + i, (Py_ssize_t)n);
		if (!s || !syspath || PyList_Insert(syspath, at++, s) < 0) {
			Py_XDECREF(s);
			PyErr_Print();
			*err = dup_err("set sys.path", NULL);
			return -1;
		}
		Py_DECREF(s);
		i += n + 1;
	}

	PyObject *code = Py_CompileString(glue, "gowsgi/glue.py", Py_file_input);
	if (code) {
		gw_glue = PyImport_ExecCodeModule("gowsgi_glue", code);
		Py_DECREF(code);
	}
	if (!gw_glue) {
		PyErr_Print();
		*err = dup_err("load the gowsgi glue module", NULL);
		return -1;
	}
	gw_FileWrapper = glue_attr("FileWrapper");
	gw_make_input = glue_attr("make_input");
	gw_log_exc = glue_attr("log_exc");
	gw_RequestTimeout = glue_attr("RequestTimeout");
	PyObject *io = PyImport_ImportModule("io");
	if (io) {
		gw_BytesIO = PyObject_GetAttrString(io, "BytesIO");
		Py_DECREF(io);
	}
	gw_version = Py_BuildValue("(ii)", 1, 0);
	k_close = intern("close");
	k_filelike = intern("filelike");
	k_fileno = intern("fileno");
	k_tell = intern("tell");
	k_version = intern("wsgi.version");
	k_input = intern("wsgi.input");
	k_errors = intern("wsgi.errors");
	k_multithread = intern("wsgi.multithread");
	k_multiprocess = intern("wsgi.multiprocess");
	k_run_once = intern("wsgi.run_once");
	k_file_wrapper = intern("wsgi.file_wrapper");
	k_input_terminated = intern("wsgi.input_terminated");
	k_method = intern("REQUEST_METHOD");
	k_path = intern("PATH_INFO");
	if (PyErr_Occurred() || PyType_Ready(&gw_sr_type) < 0 || !gw_FileWrapper || !gw_make_input || !gw_log_exc || !gw_RequestTimeout ||
	    !gw_BytesIO || !gw_version) {
		PyErr_Print();
		*err = dup_err("set up the gowsgi glue module", NULL);
		return -1;
	}
	return 0;
}

int gw_load_app(const char *module, const char *attr, int call, const char *args, char **err) {
	PyObject *load = glue_attr("load_app");
	PyObject *app = NULL;
	if (load) {
		app = PyObject_CallFunction(load, "ssis", module, attr, call, args);
		Py_DECREF(load);
	}
	if (!app) {
		char reason[512];
		PyObject *msg = PyUnicode_FromFormat("Failed to load application %s:%s", module, attr);
		log_error_to(reason, sizeof reason, msg);
		Py_XDECREF(msg);
		*err = dup_err(reason, NULL);
		return -1;
	}
	gw_app = app;
	return 0;
}

char *gw_describe(void) {
	PyObject *d = PyObject_CallMethod(gw_glue, "describe", NULL);
	const char *s = d ? PyUnicode_AsUTF8(d) : NULL;
	char *out = strdup(s ? s : Py_GetVersion());
	PyErr_Clear();
	Py_XDECREF(d);
	return out;
}

void gw_detach_main(void) { gw_main_ts = PyEval_SaveThread(); }

void gw_finalize(void) {
	PyEval_RestoreThread(gw_main_ts);
	Py_CLEAR(gw_app);
	Py_FinalizeEx();
}

gw_thread *gw_thread_new(void) {
	gw_thread *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	PyGILState_Ensure(); /* never released: the state lives as long as the thread */
	t->thread_id = PyThread_get_thread_ident();
	t->ts = PyEval_SaveThread();
	t->up_fd = -1;
	return t;
}

/* ---- request phases ---- */

/* Caches of the environ's keys and short values, by their bytes: the same few dozen come in
 * every request, and making each str anew (and interning the keys) cost more than finding
 * it here (0.7 µs of a hello request's 1.7 µs in BenchmarkCall). Direct-mapped: a collision
 * replaces the entry. Only the server's own keys are interned (so that an app's literals
 * find them by identity): under Python 3.12 an interned str lives forever, and clients choose
 * the values and the HTTP_ names. GIL held. */
#define GW_STRS 256
#define GW_STR_MAX 32
typedef struct {
	unsigned char len;
	char b[GW_STR_MAX];
	PyObject *s;
} gw_str_entry;
static gw_str_entry gw_keys[GW_STRS], gw_values[GW_STRS];

/* cached_str returns a new reference to the str of the n bytes at p, from cache when it has
 * one (NULL: no cache); a str put in the cache is interned when intern is set. */
static PyObject *cached_str(gw_str_entry *cache, int intern, const unsigned char *p, size_t n) {
	if (!cache || n > GW_STR_MAX)
		return PyUnicode_DecodeLatin1((const char *)p, (Py_ssize_t)n, NULL);
	/* The length and the first and last 8 bytes tell apart the strings that come together
	 * (SERVER_NAME and SERVER_PORT, HTTP_ACCEPT_ENCODING and HTTP_ACCEPT_LANGUAGE, ports)
	 * at a fraction of a byte-by-byte hash's cost (5 % of a hello worker's time); memcmp
	 * decides. */
	uint64_t a = 0, b = 0;
	if (n >= 8) {
		memcpy(&a, p, 8);
		memcpy(&b, p + n - 8, 8);
	} else {
		memcpy(&a, p, n);
	}
	uint64_t h = (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full) ^ ((uint64_t)n * 0x165667B19E3779F9ull);
	gw_str_entry *e = &cache[(h >> 40) % GW_STRS];
	if (e->s && e->len == n && memcmp(e->b, p, n) == 0) {
		Py_INCREF(e->s);
		return e->s;
	}
	PyObject *s = PyUnicode_DecodeLatin1((const char *)p, (Py_ssize_t)n, NULL);
	if (!s)
		return NULL;
	if (intern)
		PyUnicode_InternInPlace(&s);
	Py_INCREF(s);
	Py_XSETREF(e->s, s);
	e->len = (unsigned char)n;
	memcpy(e->b, p, n);
	return s;
}

/* is_secret reports the keys whose values stay out of the cache: credentials should not
 * outlive their request in the worker's memory. */
static int is_secret(const unsigned char *k, size_t n) {
	return (n == 11 && memcmp(k, "HTTP_COOKIE", 11) == 0) ||
	       (n == 18 && memcmp(k, "HTTP_AUTHORIZATION", 18) == 0) ||
	       (n == 24 && memcmp(k, "HTTP_PROXY_AUTHORIZATION", 24) == 0);
}

static PyObject *build_environ(const char *p, size_t n) {
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	const unsigned char *u = (const unsigned char *)p;
	while (n > 0) {
		if (n < 2)
			goto bad;
		size_t kl = (size_t)u[0] | ((size_t)u[1] << 8);
		u += 2;
		n -= 2;
		if (n < kl + 4)
			goto bad;
		const unsigned char *key = u;
		u += kl;
		size_t vl = get_u32(u);
		u += 4;
		n -= kl + 4;
		if (n < vl)
			goto bad;
		int client_named = kl > 5 && memcmp(key, "HTTP_", 5) == 0;
		PyObject *k = cached_str(gw_keys, !client_named, key, kl);
		PyObject *v = cached_str(is_secret(key, kl) ? NULL : gw_values, 0, u, vl);
		int rc = (k && v) ? PyDict_SetItem(d, k, v) : -1;
		Py_XDECREF(k);
		Py_XDECREF(v);
		if (rc < 0) {
			Py_DECREF(d);
			return NULL;
		}
		u += vl;
		n -= vl;
	}
	return d;
bad:
	Py_DECREF(d);
	PyErr_SetString(PyExc_ValueError, "malformed packed environ");
	return NULL;
}

static int add_wsgi_keys(PyObject *env, const char *body, size_t body_len, int body_end, int up_fd,
                         int body_fd, PyObject *sr) {
	PyObject *input;
	if (body_end && body_len == 0) {
		input = PyObject_CallNoArgs(gw_BytesIO);
	} else {
		PyObject *b = PyBytes_FromStringAndSize(body, (Py_ssize_t)body_len);
		if (!b)
			return -1;
		if (body_end)
			input = PyObject_CallOneArg(gw_BytesIO, b);
		else
			input = PyObject_CallFunction(gw_make_input, "OiiO", b, up_fd, body_fd, sr);
		Py_DECREF(b);
	}
	if (!input)
		return -1;
	int rc = PyDict_SetItem(env, k_input, input);
	Py_DECREF(input);
	PyObject *errors = PySys_GetObject("stderr"); /* borrowed */
	if (rc == 0)
		rc = PyDict_SetItem(env, k_errors, errors ? errors : Py_None);
	if (rc == 0)
		rc = PyDict_SetItem(env, k_version, gw_version);
	if (rc == 0)
		rc = PyDict_SetItem(env, k_multithread, gw_multithread ? Py_True : Py_False);
	if (rc == 0)
		rc = PyDict_SetItem(env, k_multiprocess, gw_multiprocess ? Py_True : Py_False);
	if (rc == 0)
		rc = PyDict_SetItem(env, k_run_once, Py_False);
	if (rc == 0)
		rc = PyDict_SetItem(env, k_file_wrapper, gw_FileWrapper);
	if (rc == 0)
		rc = PyDict_SetItem(env, k_input_terminated, Py_True);
	return rc;
}

/* next_item sets *out to a new reference to the next body item: 1 on success, 0 when the
 * iterable is exhausted, -1 with an exception set. */
static int next_item(gw_thread *t, PyObject **out) {
	PyObject *item;
	if (t->seq) {
		if (t->idx >= PySequence_Fast_GET_SIZE(t->seq))
			return 0;
		item = PySequence_Fast_GET_ITEM(t->seq, t->idx);
		t->idx++;
		Py_INCREF(item);
	} else {
		item = PyIter_Next(t->iter);
		if (!item)
			return PyErr_Occurred() ? -1 : 0;
	}
	if (!PyBytes_Check(item)) {
		PyErr_Format(PyExc_TypeError, "response body items must be bytes, not %.100s",
		             Py_TYPE(item)->tp_name);
		Py_DECREF(item);
		return -1;
	}
	*out = item;
	return 1;
}

/* next_chunk moves to the next non-empty chunk: 1 found (t->chunk set), 0 exhausted, -1 error. */
static int next_chunk(gw_thread *t) {
	Py_CLEAR(t->chunk);
	for (;;) {
		PyObject *item;
		int r = next_item(t, &item);
		if (r <= 0)
			return r;
		if (PyBytes_GET_SIZE(item) > 0) {
			t->chunk = item;
			return 1;
		}
		Py_DECREF(item);
	}
}

/* try_file fills out for a FileWrapper over a regular file. Returns 1 when it did, 0 when the
 * wrapper must be iterated instead (no exception set), -1 on error. */
static int try_file(gw_thread *t, PyObject *fw, gw_out *out) {
	PyObject *filelike = PyObject_GetAttr(fw, k_filelike);
	if (!filelike)
		return -1;
	PyObject *fno = PyObject_CallMethodNoArgs(filelike, k_fileno);
	PyObject *pos = fno ? PyObject_CallMethodNoArgs(filelike, k_tell) : NULL;
	Py_DECREF(filelike);
	long fd = -1;
	long long off = -1;
	if (fno && pos) {
		fd = PyLong_AsLong(fno);
		off = PyLong_AsLongLong(pos);
	}
	Py_XDECREF(fno);
	Py_XDECREF(pos);
	if (fd < 0 || off < 0) {
		PyErr_Clear(); /* not a real file: iterate it */
		return 0;
	}
	struct stat st;
	if (fstat((int)fd, &st) < 0 || !S_ISREG(st.st_mode))
		return 0;
	int dupfd = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
	if (dupfd < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	out->kind = GW_OUT_FILE;
	out->fd = dupfd;
	out->file_off = off;
	out->file_len = st.st_size > off ? st.st_size - off : 0;
	out->total = out->file_len;
	return 1;
}

/* get_optional_attr sets *out to o.name and returns 1, or returns 0 with *out NULL and no
 * exception when o has no such attribute, or -1 with an exception set. */
static int get_optional_attr(PyObject *o, PyObject *name, PyObject **out) {
#if PY_VERSION_HEX >= 0x030D0000
	return PyObject_GetOptionalAttr(o, name, out);
#else
	return _PyObject_LookupAttr(o, name, out);
#endif
}

static void sync_up(int up_fd) {
	unsigned char s = GW_UP_SYNC;
	Py_BEGIN_ALLOW_THREADS
	(void)write_all(up_fd, &s, 1); /* a dead front is noticed on the frame socket */
	Py_END_ALLOW_THREADS
}

/* sent_via_write reports whether write() already sent the head. */
static int sent_via_write(gw_thread *t) { return t->sr && ((gw_sr *)t->sr)->sent; }

/* GW_JOIN_MAX bounds the list bodies whose items are joined into one chunk: copying them costs
 * less than the call that would fetch each next one. */
#define GW_JOIN_MAX 16384

/* join_rest joins the current chunk and the remaining items of t->seq, all bytes, into
 * t->joined: the body goes out in one DONE instead of a gw_next per item. */
static int join_rest(gw_thread *t, gw_out *out) {
	gw_buf *b = &t->joined;
	b->len = 0;
	if (buf_put(b, PyBytes_AS_STRING(t->chunk), (size_t)PyBytes_GET_SIZE(t->chunk)) < 0)
		return -1;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(t->seq);
	for (; t->idx < n; t->idx++) {
		PyObject *it = PySequence_Fast_GET_ITEM(t->seq, t->idx);
		if (buf_put(b, PyBytes_AS_STRING(it), (size_t)PyBytes_GET_SIZE(it)) < 0)
			return -1;
	}
	Py_CLEAR(t->chunk);
	out->kind = GW_OUT_DONE;
	out->data = b->p;
	out->data_len = b->len;
	return 0;
}

/* drop_request marks the request over and drops its objects. Over first: dropping them may
 * run an app's finalizers, whose write() must fail and which no timeout may reach. */
static void drop_request(gw_thread *t) {
	if (t->sr)
		((gw_sr *)t->sr)->done = 1;
	t->serial = 0;
	t->seq = NULL;
	Py_CLEAR(t->result);
	Py_CLEAR(t->sr);
	Py_CLEAR(t->environ);
}

/* lend_chunk lends out's data from the arena when it is the current chunk there, so that the
 * front writes it from the object (arena.c): the chunk then lives on in the hold. */
static void lend_chunk(gw_thread *t, gw_out *out) {
	if (out->data && out->data_len > 0)
		out->hold = arena_lend(&t->chunk, out->data, &out->hold_off);
}

/* close_early ends a request whose body was an exact list or tuple, now all in out: such a
 * body has no close() to call, so gw_close would only drop references. A short t->chunk,
 * which out->data may point into, is dropped by the next call, and the Go side skips
 * gw_close; a long one is left to gw_close, so that an idle thread does not keep it. */
static void close_early(gw_thread *t, gw_out *out) {
	if (out->kind != GW_OUT_DONE || !t->seq)
		return;
	drop_request(t);
	out->closed = !t->chunk || PyBytes_GET_SIZE(t->chunk) <= GW_JOIN_MAX;
}

void gw_call(gw_thread *t, unsigned long long serial, const char *env, size_t env_len, const char *body, size_t body_len,
             int body_end, int up_fd, int body_fd, gw_out *out) {
	memset(out, 0, sizeof *out);
	out->total = -1;
	out->fd = -1;
	out->hold = -1;
	PyEval_RestoreThread(t->ts);
	Py_CLEAR(t->chunk); /* left by close_early */
	arena_sweep();
	t->serial = serial;
	t->up_fd = up_fd;
	t->err[0] = 0;
	int done = 0, r;

	t->sr = sr_new(up_fd);
	if (!t->sr) {
		log_error(t, "Error creating start_response for");
		goto fail;
	}
	t->environ = build_environ(env, env_len);
	if (!t->environ || add_wsgi_keys(t->environ, body, body_len, body_end, up_fd, body_fd, t->sr) < 0) {
		log_error(t, "Error building environ for");
		goto fail;
	}
	t->result = PyObject_CallFunctionObjArgs(gw_app, t->environ, t->sr, NULL);
	if (!t->result) {
		log_error(t, "Error handling request");
		goto fail;
	}
	if (Py_IS_TYPE(t->result, (PyTypeObject *)gw_FileWrapper) && !sent_via_write(t)) {
		r = try_file(t, t->result, out);
		if (r < 0) {
			log_error(t, "Error handling request");
			goto fail;
		}
		if (r > 0)
			goto head;
	}
	if (PyList_CheckExact(t->result) || PyTuple_CheckExact(t->result)) {
		t->seq = t->result;
		t->idx = 0;
		long long total = 0;
		Py_ssize_t n = PySequence_Fast_GET_SIZE(t->seq);
		for (Py_ssize_t i = 0; i < n && total >= 0; i++) {
			PyObject *it = PySequence_Fast_GET_ITEM(t->seq, i);
			total = PyBytes_Check(it) ? total + PyBytes_GET_SIZE(it) : -1;
		}
		out->total = total;
	} else {
		t->iter = PyObject_GetIter(t->result);
		if (!t->iter) {
			log_error(t, "Error iterating the response of");
			goto fail;
		}
	}
	r = next_chunk(t);
	if (r < 0) {
		log_error(t, "Error handling request");
		goto fail;
	}
	done = r == 0 || (t->seq && t->idx >= PySequence_Fast_GET_SIZE(t->seq));
	out->kind = done ? GW_OUT_DONE : GW_OUT_DATA;
	if (t->chunk) {
		out->data = PyBytes_AS_STRING(t->chunk);
		out->data_len = (size_t)PyBytes_GET_SIZE(t->chunk);
	}
	if (!done && out->total >= 0 && out->total <= GW_JOIN_MAX && join_rest(t, out) < 0) {
		log_error(t, "Error handling request");
		goto fail;
	}

head:
	if (sent_via_write(t)) {
		out->head_sent = 1;
		out->total = -1;
		sync_up(up_fd);
		lend_chunk(t, out);
		close_early(t, out);
		t->ts = PyEval_SaveThread();
		return;
	}
	gw_sr *sr = (gw_sr *)t->sr;
	if (!sr->status)
		PyErr_SetString(PyExc_AssertionError, "the application returned without calling start_response()");
	if (!sr->status || pack_head(&t->head, sr->status, sr->headers) < 0) {
		log_error(t, "Invalid response status or headers for");
		if (out->fd >= 0)
			close(out->fd);
		out->fd = -1;
		goto fail;
	}
	sr->sent = 1;
	out->head = t->head.p;
	out->head_len = t->head.len;
	lend_chunk(t, out);
	close_early(t, out);
	t->ts = PyEval_SaveThread();
	return;

fail:
	out->kind = GW_OUT_ERROR;
	out->err = t->err;
	out->data = NULL;
	out->data_len = 0;
	out->head = NULL;
	if (sent_via_write(t)) {
		out->head_sent = 1;
		sync_up(up_fd);
	}
	t->ts = PyEval_SaveThread();
}

void gw_next(gw_thread *t, gw_out *out) {
	memset(out, 0, sizeof *out);
	out->total = -1;
	out->fd = -1;
	out->hold = -1;
	PyEval_RestoreThread(t->ts);
	int r = (t->seq || t->iter) ? next_chunk(t) : 0;
	if (r < 0) {
		log_error(t, "Error in the response iterable of");
		out->kind = GW_OUT_ERROR;
		out->err = t->err;
	} else {
		int done = r == 0 || (t->seq && t->idx >= PySequence_Fast_GET_SIZE(t->seq));
		out->kind = done ? GW_OUT_DONE : GW_OUT_DATA;
		if (t->chunk) {
			out->data = PyBytes_AS_STRING(t->chunk);
			out->data_len = (size_t)PyBytes_GET_SIZE(t->chunk);
		}
		lend_chunk(t, out);
	}
	t->ts = PyEval_SaveThread();
}

void gw_close(gw_thread *t) {
	PyEval_RestoreThread(t->ts);
	Py_CLEAR(t->chunk);
	arena_sweep(); /* what the front wrote meanwhile need not wait for the next request */
	Py_CLEAR(t->iter);
	t->seq = NULL; /* borrowed from result */
	if (t->result) {
		/* Most apps return a list, which has no close(): no AttributeError made and dropped
		 * for it, 0.4 µs per request in BenchmarkCall. */
		PyObject *close = NULL;
		int found = PyList_CheckExact(t->result) || PyTuple_CheckExact(t->result)
		                ? 0
		                : get_optional_attr(t->result, k_close, &close);
		if (found > 0) {
			PyObject *r = PyObject_CallNoArgs(close);
			Py_DECREF(close);
			if (r)
				Py_DECREF(r);
			else
				log_error(t, "Error closing the response of");
		} else if (found < 0) {
			log_error(t, "Error closing the response of");
		}
	}
	drop_request(t);
	t->ts = PyEval_SaveThread();
}

int gw_sweep(gw_thread *t) {
	PyEval_RestoreThread(t->ts);
	arena_sweep();
	int lent = arena_lent();
	t->ts = PyEval_SaveThread();
	return lent;
}

unsigned long gw_sweeps(void) { return arena_sweeps(); }

int gw_interrupt(gw_thread *t, unsigned long long serial) {
	PyGILState_STATE g = PyGILState_Ensure();
	int n = 0;
	if (serial != 0 && t->serial == serial)
		n = PyThreadState_SetAsyncExc(t->thread_id, gw_RequestTimeout);
	PyGILState_Release(g);
	return n;
}
