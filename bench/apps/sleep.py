"""sleep: an I/O-bound request: waits 10 ms (time.sleep) and answers a short body.

Under gunicorn's gevent worker time.sleep is monkey-patched into a cooperative sleep.
"""

import time

BODY = b"slept 10 ms\n"


def application(environ, start_response):
    time.sleep(0.010)
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(BODY))),
    ])
    return [BODY]
