"""A small Flask application served by waitress_c.

    waitress-c-serve --listen=127.0.0.1:8080 examples.flask_app:app

Routes: ``/`` and ``/hello/<name>``; ``POST /form`` (urlencoded) and
``POST /upload`` (multipart, answers the SHA-256 of the file) echo what they
got as JSON; ``/stream`` streams lines from a generator; ``/file`` sends a
file with ``send_file`` (ranges and conditional requests included) through
``wsgi.file_wrapper``; ``/cookie/set`` and ``/cookie`` set and read a cookie;
``/redirect`` answers 302; ``/error`` raises.

``/file`` sends the file named by ``$EXAMPLE_FILE``, this module's source by
default.  Its ``X-File-Wrapper`` header names the class of
``environ['wsgi.file_wrapper']`` and ``X-Body-Iterable`` the class of the
body Flask hands to the server.
"""

import hashlib
import os

from flask import Flask, Response, jsonify, redirect, request, send_file

app = Flask(__name__)


def qualname(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


@app.get("/")
def index():
    return "Hello from Flask\n"


@app.get("/hello/<name>")
def hello(name):
    return jsonify(hello=name)


@app.post("/form")
def form():
    return jsonify(dict(request.form))


@app.post("/upload")
def upload():
    f = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    for block in iter(lambda: f.stream.read(65536), b""):
        digest.update(block)
        size += len(block)
    return jsonify(
        filename=f.filename,
        size=size,
        sha256=digest.hexdigest(),
        note=request.form.get("note"),
    )


@app.get("/stream")
def stream():
    count = int(request.args.get("n", 5))

    def lines():
        for i in range(count):
            yield "line %d\n" % i

    return Response(lines(), mimetype="text/plain")


@app.get("/file")
def file():
    path = os.environ.get("EXAMPLE_FILE", __file__)
    response = send_file(path, mimetype="application/octet-stream")
    response.headers["X-File-Wrapper"] = qualname(
        request.environ["wsgi.file_wrapper"]
    )
    response.headers["X-Body-Iterable"] = qualname(type(response.response))
    return response


@app.get("/cookie/set")
def set_cookie():
    response = jsonify(set=request.args["value"])
    response.set_cookie("flavour", request.args["value"])
    return response


@app.get("/cookie")
def get_cookie():
    return jsonify(flavour=request.cookies.get("flavour"))


@app.get("/redirect")
def to_hello():
    return redirect("/hello/redirected")


@app.get("/error")
def error():
    raise RuntimeError("an application error")
