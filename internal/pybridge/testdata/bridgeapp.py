import sys
import threading

_local = threading.local()
_BIG = b"B" * 100000
_kept = []
_held = None


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


def _arena(environ):
    lo, hi = environ["ARENA"].split("-")
    return int(lo), int(hi)


def _churn(seed, lo, hi):
    """Allocates, resizes and frees big bytes, bytearray and str objects at random, more than
    the arena holds, then checks every live one kept its bytes: "ok N" with N the bytes and
    str objects that were allocated in the arena (lo <= id < hi), or what was corrupt."""
    import random
    rnd = random.Random(seed)
    live, inside = {}, 0
    for step in range(3000):
        op = rnd.random()
        if op < 0.5 or not live:
            if rnd.random() < 0.02:
                size = rnd.randrange(4 << 20, 6 << 20)  # given back to the system when freed
            else:
                size = rnd.choice([rnd.randrange(1, 20000), rnd.randrange(16000, 300000), 65536])
            v, kind = step % 251, rnd.random()
            if kind < 0.6:
                o = bytes([v]) * size
            elif kind < 0.8:
                o = bytearray([v]) * size
            else:
                o = chr(0x100 + v) * (size // 2 + 1)
            if not isinstance(o, bytearray) and lo <= id(o) < hi:
                inside += 1
            live[step] = (o, v)
        elif op < 0.65:
            o, v = live[rnd.choice(list(live))]
            if isinstance(o, bytearray):  # resized in place or moved (PyObject_Realloc)
                if rnd.random() < 0.5:
                    o.extend(bytes([v]) * rnd.randrange(1, 100000))
                else:
                    del o[len(o) // 2:]
        else:
            del live[rnd.choice(list(live))]
    for k, (o, v) in live.items():
        want = chr(0x100 + v) if isinstance(o, str) else v
        if o.count(want) != len(o):
            return "corrupt %d" % k
    return "ok %d" % inside


def _fork(lo, hi):
    """Forks with big objects in the arena; the child frees them and allocates its own, which
    must not land on its parent's, and the parent does the same with others, which must not
    reach the child's: "child C parent intact" or "... corrupt" (C 3: the child saw the
    parent's)."""
    import os
    import time
    parent = [bytes([i]) * 100000 for i in range(20)]
    shared = [bytes([100 + i]) * 100000 for i in range(20)]
    if not all(lo <= id(o) < hi for o in parent + shared):
        return "not in the arena"
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            time.sleep(0.1)  # the parent reuses the pages of shared meanwhile
            if not all(o.count(100 + i) == 100000 for i, o in enumerate(shared)):
                code = 3
            else:
                del parent[:]
                mine = [bytes([200]) * 100000 for _ in range(40)]
                code = 0 if all(m.count(200) == 100000 for m in mine) else 1
        finally:
            os._exit(code)
    del shared[:]
    theirs = [bytes([201]) * 100000 for _ in range(20)]
    _, status = os.waitpid(pid, 0)
    del theirs
    ok = all(o.count(i) == 100000 for i, o in enumerate(parent))
    return "child %d parent %s" % (os.waitstatus_to_exitcode(status), "intact" if ok else "corrupt")


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
    if path == "/fresh":  # 64 KiB chunks, each a new object of byte i, dropped once yielded
        start_response("200 OK", [])
        return (bytes([i]) * 65536 for i in range(6))
    if path == "/hold8m":  # 8 MiB kept (written through) or let go
        global _held
        _held = bytes(range(256)) * (32 << 10) if environ.get("KEEP") == "1" else None
        lo, hi = _arena(environ)
        start_response("200 OK", [])
        return [b"ok" if _held is None or lo <= id(_held) < hi else b"not in the arena"]
    if path == "/lend8m":  # one 8 MiB chunk, which only the response refers to
        start_response("200 OK", [])
        return [bytes(range(256)) * (32 << 10)]
    if path == "/churn":
        start_response("200 OK", [])
        return [_churn(int(environ["SEED"]), *_arena(environ)).encode()]
    if path == "/fork":
        start_response("200 OK", [])
        return [_fork(*_arena(environ)).encode()]
    if path == "/notbytes":
        start_response("200 OK", [])
        return ["text"]
    start_response("404 Not Found", [])
    return []
