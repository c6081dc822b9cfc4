"""The views of the example project: the routes of
``examples/flask_app.py``.

``/file`` returns a ``FileResponse`` of ``$EXAMPLE_FILE`` (this module's
source by default): Django's WSGI handler hands such a response to the
server through ``environ['wsgi.file_wrapper']``, whose class the
``X-File-Wrapper`` header names.  Django does not answer ``Range`` requests
(the whole file is sent with 200).
"""

import hashlib
import os

from django.http import (
    FileResponse,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST


def qualname(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


@require_GET
def index(request):
    return HttpResponse("Hello from Django\n", content_type="text/plain")


@require_GET
def hello(request, name):
    return JsonResponse({"hello": name})


@require_POST
def form(request):
    return JsonResponse(request.POST.dict())


@require_POST
def upload(request):
    f = request.FILES["file"]
    digest = hashlib.sha256()
    size = 0
    for block in f.chunks():
        digest.update(block)
        size += len(block)
    return JsonResponse(
        {
            "filename": f.name,
            "size": size,
            "sha256": digest.hexdigest(),
            "note": request.POST.get("note"),
        }
    )


@require_GET
def stream(request):
    count = int(request.GET.get("n", 5))

    def lines():
        for i in range(count):
            yield "line %d\n" % i

    return StreamingHttpResponse(lines(), content_type="text/plain")


@require_GET
def file(request):
    path = os.environ.get("EXAMPLE_FILE", __file__)
    response = FileResponse(
        open(path, "rb"), content_type="application/octet-stream"
    )
    response["X-File-Wrapper"] = qualname(request.META["wsgi.file_wrapper"])
    return response


@require_GET
def set_cookie(request):
    response = JsonResponse({"set": request.GET["value"]})
    response.set_cookie("flavour", request.GET["value"])
    return response


@require_GET
def get_cookie(request):
    return JsonResponse({"flavour": request.COOKIES.get("flavour")})


@require_GET
def to_hello(request):
    return redirect("/hello/redirected")


def error(request):
    raise RuntimeError("an application error")
