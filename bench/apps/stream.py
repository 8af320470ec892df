"""stream: 1 MiB answered as 16 chunks of 64 KiB from a generator.

The length is announced (Content-Length) so that every server keeps the
connection alive; the body itself is produced chunk by chunk.
"""

CHUNK = b"x" * (64 * 1024)
COUNT = 16


def application(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(len(CHUNK) * COUNT)),
    ])
    return _body()


def _body():
    for _ in range(COUNT):
        yield CHUNK
