"""A small Bottle app, validated: `bottleapp:application`.

Routes: GET /json, POST /echo (returns the request body and its length)."""

from wsgiref.validate import validator

import bottle

app = bottle.Bottle()


@app.get("/json")
def json_route():
    return {"framework": "bottle", "ok": True, "query": dict(bottle.request.query)}


@app.post("/echo")
def echo():
    body = bottle.request.body.read()
    bottle.response.content_type = bottle.request.content_type or "application/octet-stream"
    bottle.response.set_header("X-Length", str(len(body)))
    return body


application = validator(app)
