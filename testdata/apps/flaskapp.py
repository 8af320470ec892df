"""A small Flask app, validated: `flaskapp:application`.

Routes: GET /json, POST /form (urlencoded or multipart form fields echoed as
JSON), GET /raise (an unhandled exception that Flask turns into a 500).

The routes avoid request.get_data()/get_json() on purpose: with
wsgi.input_terminated set, werkzeug calls wsgi.input.read() without a size,
which wsgiref.validate forbids (see rawapp.py); form parsing reads in sized
pieces and is fine under the validator."""

from wsgiref.validate import validator

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/json")
def json_route():
    return jsonify(framework="flask", ok=True, args=request.args.to_dict())


@app.route("/form", methods=["POST"])
def form_route():
    return jsonify(fields=request.form.to_dict(),
                   files={k: f.filename for k, f in request.files.items()})


@app.route("/raise")
def raise_route():
    raise RuntimeError("flaskapp: /raise raises")


application = validator(app)
