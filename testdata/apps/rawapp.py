"""rawapp: one WSGI router whose endpoints each exercise one point of PEP 3333.

Serve it with ``gowsgi --chdir testdata/apps rawapp:application``.

Two callables are exported:

``application``
    The router wrapped in ``wsgiref.validate.validator``, so that Python
    itself checks the server's side of PEP 3333 (environ contents, the
    wsgi.input and wsgi.errors interfaces, start_response, write()). Use this
    one unless a test needs ``raw_application``.

``raw_application``
    The bare router. The validator forbids, on the application's side, some
    behaviours whose server-side handling we want to test, so those need the
    unwrapped router:

    * ``/bad_header``: the validator raises in start_response before a bad
      status or header ever reaches the server (for every kind but
      ``nonlatin``), so the server's own header validation would go untested.
    * ``/file``: the validator wraps the returned iterable in its
      IteratorWrapper, which hides the server's ``wsgi.file_wrapper`` object
      from the server (no sendfile path; only plain iteration is tested).

    Reading with ``read()`` (no size) is also forbidden by the validator's
    InputWrapper, although every real server supports it and frameworks
    (werkzeug's get_data(), for one) rely on it. The routes that test it
    (``/echo``, ``/read_past_end``, ``/readlines_hint``) call it on the
    server's own stream, unwrapped from the validator's InputWrapper, and
    check the result type themselves, so they work under both callables.

Counters (``/closed_count``) are per worker process: run with ``-w 1`` when a
test relies on them.
"""

import hashlib
import http
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from urllib.parse import parse_qs
from wsgiref.validate import validator

with warnings.catch_warnings():
    # cgi is deprecated since 3.11 (removed in 3.13); /upload uses it on
    # purpose because it reads wsgi.input the way old apps do.
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import cgi
    except ImportError:  # Python >= 3.13
        cgi = None

CHUNK_64K = b"x" * 65536

# _lock guards the counters that follow.
_lock = threading.Lock()
_created = 0  # iterables created by /stream and /exc_mid_stream
_closed = 0  # ... of which close() was called

_tlocal = threading.local()


def _count_created():
    global _created
    with _lock:
        _created += 1


def _count_closed():
    global _closed
    with _lock:
        _closed += 1


def _query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _server_input(environ):
    """Returns the server's wsgi.input even under the validator (see the module doc)."""
    inp = environ["wsgi.input"]
    return getattr(inp, "input", inp) if type(inp).__name__ == "InputWrapper" else inp


def _unwrap(value):
    """Returns the server's object behind a wsgiref.validate wrapper."""
    name = type(value).__name__
    if name == "InputWrapper":
        return value.input
    if name == "ErrorWrapper":
        return value.errors
    return value


def _read_all(environ):
    data = _server_input(environ).read()
    if type(data) is not bytes:
        raise AssertionError("wsgi.input.read() returned %r, not bytes" % type(data))
    return data


def _respond(start_response, body, status="200 OK", ctype="text/plain", extra=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    headers.extend(extra)
    start_response(status, headers)
    return [body]


def _json(start_response, obj, status="200 OK", extra=()):
    return _respond(start_response, json.dumps(obj, sort_keys=True), status,
                    "application/json", extra)


def _lines_json(start_response, lines, **more):
    for line in lines:
        if type(line) is not bytes:
            raise AssertionError("line %r is not bytes" % (line,))
    obj = {"count": len(lines), "lines": [line.decode("latin-1") for line in lines]}
    obj.update(more)
    return _json(start_response, obj)


# --- environ (also served for any path below /environ/) -------------------------

def environ_route(environ, start_response):
    strs = {k: v for k, v in environ.items() if isinstance(v, str)}
    types = {k: type(_unwrap(v)).__name__ for k, v in environ.items() if k.startswith("wsgi.")}
    obj = {
        "environ": strs,
        "types": types,
        "wsgi.version": list(environ["wsgi.version"]),
        "wsgi.multithread": environ["wsgi.multithread"],
        "wsgi.multiprocess": environ["wsgi.multiprocess"],
        "wsgi.run_once": environ["wsgi.run_once"],
        "wsgi.input_terminated": environ.get("wsgi.input_terminated"),
        "has_file_wrapper": "wsgi.file_wrapper" in environ,
    }
    return _json(start_response, obj)


# --- wsgi.input ----------------------------------------------------------------

def echo(environ, start_response):
    body = _read_all(environ)
    ctype = environ.get("CONTENT_TYPE") or "application/octet-stream"
    return _respond(start_response, body, ctype=ctype, extra=[
        ("X-Sha256", hashlib.sha256(body).hexdigest()),
        ("X-Length", str(len(body))),
    ])


def read_n(environ, start_response):
    n = int(_query(environ).get("n", "1024"))
    inp = environ["wsgi.input"]
    pieces, h, total = 0, hashlib.sha256(), 0
    while True:
        piece = inp.read(n)
        if type(piece) is not bytes:
            raise AssertionError("read(%d) returned %r" % (n, type(piece)))
        if len(piece) > n:
            return _respond(start_response, "read(%d) returned %d bytes" % (n, len(piece)),
                            "500 Internal Server Error")
        if not piece:
            break
        pieces += 1
        total += len(piece)
        h.update(piece)
    return _json(start_response, {"pieces": pieces, "length": total, "sha256": h.hexdigest()})


def readline(environ, start_response):
    inp = environ["wsgi.input"]
    lines = []
    while True:
        line = inp.readline()
        if not line:
            break
        lines.append(line)
        if not line.endswith(b"\n") and inp.readline() != b"":
            raise AssertionError("readline() returned a partial line before the end: %r" % line)
    return _lines_json(start_response, lines)


def readline_size(environ, start_response):
    size = int(_query(environ).get("size", "4"))
    inp = environ["wsgi.input"]
    lines = []
    while True:
        line = inp.readline(size)
        if len(line) > size:
            return _respond(start_response, "readline(%d) returned %d bytes" % (size, len(line)),
                            "500 Internal Server Error")
        if not line:
            break
        lines.append(line)
    return _lines_json(start_response, lines, size=size)


def readlines(environ, start_response):
    return _lines_json(start_response, environ["wsgi.input"].readlines())


def readlines_hint(environ, start_response):
    # The server may ignore the hint (PEP 3333), so report what readlines(hint)
    # returned and what was left; together they must be the whole body.
    hint = int(_query(environ).get("hint", "10"))
    first = environ["wsgi.input"].readlines(hint)
    rest = _read_all(environ)
    return _lines_json(start_response, first, rest=rest.decode("latin-1"), hint=hint)


def iter_input(environ, start_response):
    return _lines_json(start_response, [line for line in environ["wsgi.input"]])


def read_past_end(environ, start_response):
    inp = _server_input(environ)
    data = _read_all(environ)
    after = {"read()": inp.read(), "read(10)": inp.read(10), "readline()": inp.readline()}
    bad = {k: repr(v) for k, v in after.items() if v != b"" or type(v) is not bytes}
    if bad:
        return _json(start_response, {"ok": False, "bad": bad}, "500 Internal Server Error")
    return _json(start_response, {"ok": True, "length": len(data)})


# --- write() and iterables -----------------------------------------------------

def write_route(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(5):
        write(b"chunk%d\n" % i)
    return []


def write_and_iter(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written;")
    return [b"iter1;", b"iter2"]


class CountedBody:
    """An iterable that yields n chunks (sleeping between them), optionally
    raises after the first, and counts close() calls."""

    def __init__(self, n, delay, raise_after_first=False):
        self.n, self.delay, self.raise_after_first = n, delay, raise_after_first
        self.closed = False
        _count_created()

    def __iter__(self):
        for i in range(self.n):
            if i and self.delay:
                time.sleep(self.delay)
            yield b"chunk %d\n" % i
            if self.raise_after_first:
                raise RuntimeError("rawapp: /exc_mid_stream fails after the first chunk")

    def close(self):
        if not self.closed:
            self.closed = True
            _count_closed()


def stream(environ, start_response):
    q = _query(environ)
    n, delay = int(q.get("n", "3")), float(q.get("delay", "0"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return CountedBody(n, delay)


def closed_count(environ, start_response):
    with _lock:
        obj = {"created": _created, "closed": _closed}
    return _json(start_response, obj)


def big(environ, start_response):
    q = _query(environ)
    chunks = int(q["kb"]) // 64 if "kb" in q else int(q.get("mb", "1")) * 16
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("cl", "1") != "0":
        headers.append(("Content-Length", str(chunks << 16)))
    write = start_response("200 OK", headers)
    vary = q.get("vary") == "1"  # chunk i is 64 KiB of byte i % 251: reordering shows

    def gen():
        for i in range(chunks):
            yield bytes([i % 251]) * 65536 if vary else CHUNK_64K

    if q.get("one") == "1":  # the whole body as one bytes object
        return [CHUNK_64K * chunks]
    if q.get("write") == "1":  # through write() instead of the iterable
        for chunk in gen():
            write(chunk)
        return []
    return gen()


# --- errors --------------------------------------------------------------------

def exc_before(environ, start_response):
    raise RuntimeError("rawapp: /exc_before raises before start_response")


def exc_after_start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("rawapp: /exc_after_start raises before the first chunk")


def exc_mid_stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return CountedBody(3, 0, raise_after_first=True)


def exc_info_replace(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("rawapp: replaced by a 500")
    except ValueError:
        body = b"replaced by exc_info\n"
        start_response("500 Internal Server Error",
                       [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
                       sys.exc_info())
    return [body]


def exc_info_after_body(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"first chunk\n")
    try:
        raise ValueError("rawapp: error after the headers were sent")
    except ValueError:
        # The headers are out: start_response must re-raise this exception.
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                       sys.exc_info())
    # Reaching this line means start_response did not re-raise.
    return [b"start_response with exc_info did not raise\n"]


def double_start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("201 Created", [("Content-Type", "text/plain")])
    except Exception as e:
        body = "%s raised: yes\n" % type(e).__name__
    else:
        body = "second start_response raised: no\n"
    return [body.encode()]


BAD_HEADERS = {
    "crlf": ("200 OK", [("X-Bad", "a\r\nInjected: yes")]),
    "nul": ("200 OK", [("X-Bad", "a\x00b")]),
    "nonlatin": ("200 OK", [("X-Bad", "snow\u2603man")]),
    "nonstr": ("200 OK", [("X-Bad", b"bytes-value")]),
    "badstatus": ("OK", []),
    "space_in_name": ("200 OK", [("X Bad", "v")]),
}


def bad_header(environ, start_response):
    kind = _query(environ).get("kind", "crlf")
    status, headers = BAD_HEADERS[kind]
    start_response(status, [("Content-Type", "text/plain")] + headers)
    return [b"the server must not send this\n"]


def cl_short(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"01234"]


def cl_long(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"0123456789"]


def single(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"single chunk body\n"]


def multi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"one;"
        yield b"two;"
        yield b"three\n"

    return gen()


def tlocal(environ, start_response):
    _tlocal.count = getattr(_tlocal, "count", 0) + 1
    return _json(start_response, {"ident": threading.get_ident(), "count": _tlocal.count})


def file_route(environ, start_response):
    size = int(_query(environ).get("size", "100000"))
    data = file_bytes(size)
    fd, path = tempfile.mkstemp(prefix="gowsgi-rawapp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    fh = open(path, "rb")
    os.unlink(path)  # the open file keeps the data; nothing is left behind
    wrapper = environ.get("wsgi.file_wrapper")
    which = "server"
    if wrapper is None:
        from wsgiref.util import FileWrapper as wrapper
        which = "fallback"
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(size)),
        ("X-Sha256", hashlib.sha256(data).hexdigest()),
        ("X-File-Wrapper", which),
    ])
    return wrapper(fh, 8192)


def file_bytes(size):
    """Returns the deterministic content /file serves for size bytes."""
    pattern = bytes(range(251))
    return (pattern * (size // 251 + 1))[:size]


def upload(environ, start_response):
    if cgi is None:
        return _respond(start_response, "cgi module unavailable\n", "501 Not Implemented")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        form = cgi.FieldStorage(fp=environ["wsgi.input"], environ=environ, keep_blank_values=True)
    fields, files = {}, {}
    for key in form.keys():
        item = form[key]
        if isinstance(item, list):
            item = item[0]
        if item.filename is not None:
            data = item.file.read()
            files[key] = {"filename": item.filename, "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()}
        else:
            fields[key] = item.value
    return _json(start_response, {"names": sorted(form.keys()), "fields": fields, "files": files})


# --- misc ----------------------------------------------------------------------

def sleep(environ, start_response):
    time.sleep(float(_query(environ).get("s", "1")))
    return _respond(start_response, "slept")


def head(environ, start_response):
    return _respond(start_response, "body for HEAD testing\n")


def status(environ, start_response):
    code = int(_query(environ).get("code", "418"))
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    line = "%d %s" % (code, phrase)
    if code in (204, 304):
        # No body and (per the validator) no Content-Type for these.
        start_response(line, [])
        return []
    return _respond(start_response, line + "\n", line)


def osenv(environ, start_response):
    """Returns os.environ[name] (for -e/--env), or 404 when unset."""
    name = _query(environ).get("name", "")
    if name not in os.environ:
        return _respond(start_response, "unset\n", "404 Not Found")
    return _respond(start_response, os.environ[name])


# --- operational failures (timeouts, crashes, leaks) ----------------------------

def spin(environ, start_response):
    """A Python loop: the interrupt lands between bytecodes."""
    deadline = time.time() + float(_query(environ).get("s", "60"))
    while time.time() < deadline:
        pass
    return _respond(start_response, "spun")


def regex(environ, start_response):
    """Catastrophic backtracking in C: holds the GIL, freezing every thread of the worker."""
    import re
    n = int(_query(environ).get("n", "40"))
    re.match(r"(a*)*b", "a" * n)
    return _respond(start_response, "matched")


def segfault(environ, start_response):
    import ctypes
    ctypes.string_at(0)
    return _respond(start_response, "unreachable")


_counted = 0  # /counted responses closed in this worker
_counted_lock = threading.Lock()


class _Counted:
    """A one-chunk body that counts itself done when the server closes it, which gowsgi does
    after the response's last frame is sent."""

    def __iter__(self):
        yield b"counted\n"

    def close(self):
        global _counted
        with _counted_lock:
            _counted += 1


def counted(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Counted()


def segfault_after(environ, start_response):
    """Waits (without the GIL) until n /counted responses were sent, at most wait seconds
    (default 5), then crashes the worker like /segfault."""
    q = _query(environ)
    n = int(q.get("n", "0"))
    deadline = time.monotonic() + float(q.get("wait", "5"))
    while _counted < n and time.monotonic() < deadline:
        time.sleep(0.001)
    return segfault(environ, start_response)


_leak = []


def leak(environ, start_response):
    """Keeps mb MiB per request forever: a leaking app for --max-worker-memory."""
    _leak.append(b"x" * (int(_query(environ).get("mb", "4")) << 20))  # touched, so resident
    return _respond(start_response, "leaked %d\n" % len(_leak))


_stray = {}


def keep_write(environ, start_response):
    """Keeps this request's write() and wsgi.input for a later request to misuse."""
    _stray["write"] = start_response("200 OK", [("Content-Type", "text/plain")])
    _stray["input"] = environ["wsgi.input"]
    return [b"kept"]


def use_stray(environ, start_response):
    """Uses the write() and wsgi.input of an earlier, finished request: both must fail."""
    out = []
    try:
        _stray["write"](b"LEAKED INTO ANOTHER RESPONSE")
        out.append("write: no error")
    except Exception as e:
        out.append("write: %s" % type(e).__name__)
    try:
        _stray["input"].read(10)
        out.append("read: no error")
    except Exception as e:
        out.append("read: %s" % type(e).__name__)
    return _respond(start_response, ", ".join(out))


def pid(environ, start_response):
    return _respond(start_response, str(os.getpid()))


ROUTES = {
    "/spin": spin,
    "/regex": regex,
    "/segfault": segfault,
    "/segfault_after": segfault_after,
    "/counted": counted,
    "/leak": leak,
    "/pid": pid,
    "/keep_write": keep_write,
    "/use_stray": use_stray,
    "/environ": environ_route,
    "/echo": echo,
    "/read_n": read_n,
    "/readline": readline,
    "/readline_size": readline_size,
    "/readlines": readlines,
    "/readlines_hint": readlines_hint,
    "/iter_input": iter_input,
    "/read_past_end": read_past_end,
    "/write": write_route,
    "/write_and_iter": write_and_iter,
    "/stream": stream,
    "/closed_count": closed_count,
    "/big": big,
    "/exc_before": exc_before,
    "/exc_after_start": exc_after_start,
    "/exc_mid_stream": exc_mid_stream,
    "/exc_info_replace": exc_info_replace,
    "/exc_info_after_body": exc_info_after_body,
    "/double_start": double_start,
    "/bad_header": bad_header,
    "/cl_short": cl_short,
    "/cl_long": cl_long,
    "/single": single,
    "/multi": multi,
    "/tlocal": tlocal,
    "/file": file_route,
    "/upload": upload,
    "/sleep": sleep,
    "/head": head,
    "/status": status,
    "/osenv": osenv,
}


def raw_application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/environ/"):
        path = "/environ"  # any path below /environ reports the environ too
    route = ROUTES.get(path)
    if route is None:
        return _respond(start_response, "no such route\n", "404 Not Found")
    return route(environ, start_response)


application = validator(raw_application)
