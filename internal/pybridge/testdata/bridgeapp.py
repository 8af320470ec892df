import sys
import threading

_local = threading.local()


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
    if path == "/notbytes":
        start_response("200 OK", [])
        return ["text"]
    start_response("404 Not Found", [])
    return []
