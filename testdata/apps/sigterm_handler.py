"""Installs its own SIGTERM handler at import, as some apps (or libraries) do.

The handler ends the process at once with status 99. A server that lets app
code take SIGTERM away from it would lose in-flight requests (and its graceful
shutdown) the moment the worker gets SIGTERM; gowsgi keeps signals for itself.

Routes: `/` says hello, `/sleep` sleeps one second first."""

import os
import signal
import time
from wsgiref.validate import validator


def _die(signum, frame):
    os._exit(99)


signal.signal(signal.SIGTERM, _die)


def _hello(environ, start_response):
    if environ.get("PATH_INFO") == "/sleep":
        time.sleep(1)
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


application = validator(_hello)
