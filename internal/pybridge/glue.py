"""Python side of the gowsgi worker: the WSGI protocol objects the C shim drives.

The C shim (shim.c) calls into this module; it never calls back into Go. Everything here runs
in the worker process with the GIL held.
"""
import ast
import importlib
import io
import os
import signal
import sys
import time
import traceback

import _gowsgi


class RequestTimeout(BaseException):
    """Raised inside a request that ran past --timeout. A BaseException, so that a broad
    ``except Exception`` in the app does not swallow it."""


class FileWrapper:
    """wsgi.file_wrapper: a regular file is handed to the front, which sends it with sendfile."""

    __slots__ = ("filelike", "blksize", "close")

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


class Input(io.RawIOBase):
    """The request body past the bytes that came with the request frame.

    Reads ask the front for more (which sends "100 Continue" the first time) through the
    thread's pipes; the GIL is released while waiting.
    """

    def __init__(self, prefix, up_fd, body_fd, sr):
        self._prefix = prefix
        self._pos = 0
        self._up = up_fd
        self._body = body_fd
        self._eof = False
        self._sr = sr

    def readable(self):
        return True

    def readinto(self, b):
        if self._sr.done:
            raise OSError("wsgi.input read after the response ended")
        n = len(b)
        if n == 0:
            return 0
        if self._pos < len(self._prefix):
            chunk = self._prefix[self._pos:self._pos + n]
            self._pos += len(chunk)
            b[:len(chunk)] = chunk
            return len(chunk)
        if self._eof:
            return 0
        got = _gowsgi.read_body(self._up, self._body, b)
        if got == 0:
            self._eof = True
        return got


def make_input(prefix, up_fd, body_fd, sr):
    # 256 KiB: what the front sends per round trip, so one round trip serves a 64 KiB reader
    # four times instead of once.
    return io.BufferedReader(Input(prefix, up_fd, body_fd, sr), 262144)


def _log(level, msg):
    t = time.strftime("%Y-%m-%d %H:%M:%S %z")
    sys.stderr.write("[%s] [%d] [%s] %s\n" % (t, os.getpid(), level, msg))


def log_exc(msg, etype, value, tb):
    """Write msg and the traceback to the error log; return a one-line reason."""
    try:
        lines = traceback.format_exception(etype, value, tb)
        _log("ERROR", msg + "\n" + "".join(lines).rstrip("\n"))
        sys.stderr.flush()
    except Exception:
        pass
    try:
        return "".join(traceback.format_exception_only(etype, value)).strip().splitlines()[-1]
    except Exception:
        return getattr(etype, "__name__", "exception")


def _literal_call_args(text):
    """Evaluate "a, b=1" as literal positional and keyword arguments, never running code."""
    try:
        tree = ast.parse("f(%s)" % text, mode="eval")
    except SyntaxError as e:
        raise ValueError("arguments %r are not valid Python: %s" % (text, e.msg)) from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id != "f":
        raise ValueError("arguments %r are not a plain argument list" % text)
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except ValueError:
        raise ValueError("arguments %r must be literals (strings, numbers, tuples, lists, dicts, "
                         "sets, booleans, None)" % text) from None
    if any(k.arg is None for k in call.keywords):
        raise ValueError("arguments %r: **kwargs is not allowed" % text)
    return args, kwargs


class AppError(Exception):
    """The app reference is wrong in a way a traceback would not explain."""


def load_app(module, attr, call, args):
    mod = importlib.import_module(module)
    try:
        obj = getattr(mod, attr)
    except AttributeError:
        raise AppError("module %r has no attribute %r" % (module, attr)) from None
    if call:
        if not callable(obj):
            raise AppError("%s:%s is not callable, so it cannot be a factory" % (module, attr))
        a, kw = _literal_call_args(args)
        obj = obj(*a, **kw)
        if obj is None:
            raise AppError("factory %s:%s(%s) returned None" % (module, attr, args))
    if not callable(obj):
        raise AppError("%s:%s is not callable (it is %s)" % (module, attr, type(obj).__name__))
    return obj


def _fence_signals():
    """Signals belong to the front (design.md §1.7): an app that installs a handler in a worker
    gets a warning and no change, so graceful shutdown keeps working."""
    original = signal.signal

    def guarded(signum, handler):
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        _log("WARNING", "ignoring signal.signal(%s, ...) from the app: gowsgi workers leave "
             "signals to the front process" % name)
        return signal.getsignal(signum)

    guarded.__wrapped__ = original
    signal.signal = guarded


def describe():
    return "Python %s (%s, prefix %s)" % (sys.version.split()[0], sys.implementation.name, sys.prefix)


_fence_signals()
