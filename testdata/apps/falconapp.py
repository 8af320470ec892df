"""A small Falcon app, validated: `falconapp:application`.

Routes: GET /json, POST /echo (returns the request body and its length)."""

from wsgiref.validate import validator

import falcon


class JSONResource:
    def on_get(self, req, resp):
        resp.media = {"framework": "falcon", "ok": True, "params": req.params}


class EchoResource:
    def on_post(self, req, resp):
        body = req.bounded_stream.read()
        resp.content_type = req.content_type or "application/octet-stream"
        resp.set_header("X-Length", str(len(body)))
        resp.data = body


app = falcon.App()
app.add_route("/json", JSONResource())
app.add_route("/echo", EchoResource())

application = validator(app)
