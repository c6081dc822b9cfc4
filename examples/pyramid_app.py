"""A small Pyramid application served by waitress_c through PasteDeploy
(``examples/pyramid.ini``, ``use = egg:waitress_c#main``):

    PYTHONPATH=. pserve examples/pyramid.ini

It has the routes of ``examples/flask_app.py``.  ``/file`` returns a
``FileResponse``, which takes ``environ['wsgi.file_wrapper']`` for its body
and answers ``Range`` requests; ``X-File-Wrapper`` names the class of the
wrapper and ``X-Body-Iterable`` the class of the body.  ``/error`` raises
an exception that Pyramid does not catch: the server answers 500.
"""

import hashlib
import os

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.response import FileResponse, Response


def qualname(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def index(request):
    return Response("Hello from Pyramid\n", content_type="text/plain")


def hello(request):
    return {"hello": request.matchdict["name"]}


def form(request):
    return dict(request.POST)


def upload(request):
    field = request.POST["file"]
    digest = hashlib.sha256()
    size = 0
    for block in iter(lambda: field.file.read(65536), b""):
        digest.update(block)
        size += len(block)
    return {
        "filename": field.filename,
        "size": size,
        "sha256": digest.hexdigest(),
        "note": request.POST.get("note"),
    }


def stream(request):
    count = int(request.GET.get("n", 5))

    def lines():
        for i in range(count):
            yield b"line %d\n" % i

    return Response(app_iter=lines(), content_type="text/plain")


def file(request):
    path = os.environ.get("EXAMPLE_FILE", __file__)
    response = FileResponse(
        path, request=request, content_type="application/octet-stream"
    )
    response.headers["X-File-Wrapper"] = qualname(
        request.environ["wsgi.file_wrapper"]
    )
    response.headers["X-Body-Iterable"] = qualname(type(response.app_iter))
    return response


def set_cookie(request):
    response = Response(json_body={"set": request.GET["value"]})
    response.set_cookie("flavour", request.GET["value"])
    return response


def get_cookie(request):
    return {"flavour": request.cookies.get("flavour")}


def to_hello(request):
    return HTTPFound(location="/hello/redirected")


def error(request):
    raise RuntimeError("an application error")


ROUTES = (
    ("index", "/", index, "GET", None),
    ("hello", "/hello/{name}", hello, "GET", "json"),
    ("form", "/form", form, "POST", "json"),
    ("upload", "/upload", upload, "POST", "json"),
    ("stream", "/stream", stream, "GET", None),
    ("file", "/file", file, "GET", None),
    ("set_cookie", "/cookie/set", set_cookie, "GET", None),
    ("get_cookie", "/cookie", get_cookie, "GET", "json"),
    ("redirect", "/redirect", to_hello, "GET", None),
    ("error", "/error", error, "GET", None),
)


def main(global_config, **settings):
    """The PasteDeploy application factory (``[app:main]``)."""
    with Configurator(settings=settings) as config:
        for name, pattern, view, method, renderer in ROUTES:
            config.add_route(name, pattern, request_method=method)
            config.add_view(view, route_name=name, renderer=renderer)
        return config.make_wsgi_app()
