"""The smallest WSGI application: serve it with

    bin/gowsgi --chdir examples/hello -b 127.0.0.1:8000 app:application
"""

BODY = b"Hello, World!"


def application(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(BODY))),
    ])
    return [BODY]
