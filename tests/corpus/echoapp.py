"""Echoes what reached the app, so the corpus test can compare it with the expected parse."""
import json
from wsgiref.validate import validator


def _app(environ, start_response):
    chunks = []
    while True:  # the validator allows read(size) only
        chunk = environ["wsgi.input"].read(65536)
        if not chunk:
            break
        chunks.append(chunk)
    body = b"".join(chunks)
    out = {
        "method": environ["REQUEST_METHOD"],
        "raw_uri": environ.get("RAW_URI", ""),
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "environ": {k: v for k, v in environ.items()
                    if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")},
        "body": body.decode("latin-1"),
        "scheme": environ["wsgi.url_scheme"],
    }
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


application = validator(_app)
