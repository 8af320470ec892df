"""An application factory: `create_app(name='x', debug=False)` returns a
validated WSGI app whose body is JSON echoing name and debug."""

import json
from wsgiref.validate import validator


def create_app(name="x", debug=False):
    def app(environ, start_response):
        body = json.dumps({"name": name, "debug": debug}, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return validator(app)
