import sys
import threading

_local = threading.local()
_BIG = b"B" * 100000
_kept = []


def _import_extensions():
    """Imports every extension module of the standard library's lib-dynload, which find
    the C API in the embedding binary, and calls it through ctypes.pythonapi: "N imported"
    and what could not find a symbol, one per line."""
    import importlib
    import os
    lines, imported = [], 0
    names = [n for d in sys.path if d.endswith("lib-dynload") for n in sorted(os.listdir(d))]
    for name in names:
        mod = name.split(".", 1)[0]
        if not name.endswith(".so") or mod == "readline":  # readline would set up the terminal
            continue
        try:
            importlib.import_module(mod)
            imported += 1
        except ImportError as e:
            if "symbol" in str(e):
                lines.append("%s: %s" % (mod, e))
    # ctypes.pythonapi looks the C API up in the program itself (dlopen(NULL)): apps use it,
    # e.g. PyThreadState_SetAsyncExc to stop a thread.
    import ctypes
    if ctypes.pythonapi.Py_IsInitialized() != 1:
        lines.append("ctypes.pythonapi: Py_IsInitialized() is not 1")
    return "\n".join(["%d imported" % imported] + lines)


class _Closing(list):
    """A list subclass with close(): the server must call it."""
    closed = 0

    def close(self):
        _Closing.closed += 1


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, ", b"World!"]
    if path == "/gen":
        start_response("200 OK", [])
        return (b"x" * i for i in range(4))
    if path == "/raise":
        raise ValueError("boom")
    if path == "/local":
        _local.n = getattr(_local, "n", 0) + 1
        start_response("200 OK", [])
        return [str(_local.n).encode()]
    if path == "/badheader":
        start_response("200 OK", [("X-Bad", "caf\u20ac")])
        return [b""]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [body]
    if path == "/spin":
        while True:
            pass
    if path == "/biglist":
        start_response("200 OK", [])
        return [b"a" * 10000, b"b" * 10000]
    if path == "/closing":
        start_response("200 OK", [])
        return _Closing([b"closing"])
    if path == "/closed":
        start_response("200 OK", [])
        return [str(_Closing.closed).encode()]
    if path == "/start_response":
        # The C start_response: keywords, and the errors a Python one raised.
        out = []
        for args, kwargs in [((b"200 OK", []), {}),
                             (("200 OK", ()), {}),
                             (("200 OK", [], None, 1), {}),
                             (("200 OK",), {"bogus": 1}),
                             (("200 OK", []), {"status": "x"}),
                             (("200 OK",), {}),
                             ((), {"status": "200 OK", "headers": []}),
                             (("200 OK",), {"headers": [], "exc_info": None}),
                             (("200 OK", []), {})]:
            try:
                start_response(*args, **kwargs)
                out.append("ok")
            except (TypeError, AssertionError) as e:
                out.append(type(e).__name__)
        try:
            raise KeyError("late")
        except KeyError:
            start_response("500 Oops", [("X-Late", "1")], sys.exc_info())
        return [",".join(out).encode()]
    if path == "/environ":
        start_response("200 OK", [])
        return ["\n".join("%s=%s" % kv for kv in sorted(environ.items()) if type(kv[1]) is str)
                .encode("latin-1")]
    if path == "/big":
        start_response("200 OK", [])
        return [_BIG]
    if path == "/bigrefs":
        start_response("200 OK", [])
        return [str(sys.getrefcount(_BIG)).encode()]
    if path == "/header_ids":
        # Keep the objects alive, so that two requests' ids differ unless they share them.
        _kept.extend((environ["HTTP_COOKIE"], environ["HTTP_X_PLAIN"]))
        start_response("200 OK", [])
        return [("%d %d" % (id(_kept[-2]), id(_kept[-1]))).encode()]
    if path == "/extensions":
        start_response("200 OK", [])
        return [_import_extensions().encode()]
    if path == "/notbytes":
        start_response("200 OK", [])
        return ["text"]
    start_response("404 Not Found", [])
    return []
