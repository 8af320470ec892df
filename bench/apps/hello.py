"""hello: the smallest WSGI app, a 13-byte text body."""

BODY = b"Hello, World!"


def application(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(BODY))),
    ])
    return [BODY]
