"""Flask, Django and Pyramid served by waitress_c in a real subprocess: the
example applications in ``examples/``, Flask and Django through
``waitress-c-serve``, Pyramid through ``examples/pyramid.ini``
(``use = egg:waitress_c#main``) and ``pserve``.

Each framework gets the same checks: routing, a form, a 3 MB multipart
upload, a streamed response, a file response through
``wsgi.file_wrapper``, a Range request, cookies, a redirect and an
application error."""

import hashlib
import os

import pytest
import requests
from servers import Server, script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

FRAMEWORKS = ["flask", "django", "pyramid"]
WRAPPER = "waitress_c._core.FileWrapper"
FILE_SIZE = 1024 * 1024 + 333  # the file /file sends (not a block multiple)


class Site:
    def __init__(self, framework, server, data):
        self.framework = framework
        self.server = server
        self.data = data  # the content of the file /file sends
        self.base = "http://127.0.0.1:%d" % server.port

    def session(self):
        s = requests.Session()
        s.trust_env = False  # no proxy from the environment
        return s

    def get(self, path, session=None, **kw):
        kw.setdefault("timeout", 30)
        return (session or self.session()).get(self.base + path, **kw)

    def post(self, path, session=None, **kw):
        kw.setdefault("timeout", 30)
        return (session or self.session()).post(self.base + path, **kw)


def start(framework, tmp):
    if framework == "pyramid":
        # The example ini as it is, but on a free port.
        with open(os.path.join(ROOT, "examples", "pyramid.ini")) as f:
            ini = f.read()
        assert ini.count("listen = 127.0.0.1:6543\n") == 1
        path = os.path.join(tmp, "pyramid.ini")
        with open(path, "w") as f:
            f.write(ini.replace("listen = 127.0.0.1:6543", "listen = 127.0.0.1:0"))
        args = [script("pserve"), path]
    else:
        app = {
            "flask": "examples.flask_app:app",
            "django": "examples.django_app.wsgi:application",
        }[framework]
        args = [script("waitress-c-serve"), "--listen=127.0.0.1:0", "--threads=4", app]
    return Server(args, cwd=ROOT)


@pytest.fixture(scope="module", params=FRAMEWORKS)
def site(request, tmp_path_factory):
    framework = request.param
    tmp = tmp_path_factory.mktemp(framework)
    data = os.urandom(FILE_SIZE)
    example_file = tmp / "example.bin"
    example_file.write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAMPLE_FILE", str(example_file))
        mp.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        server = start(framework, str(tmp))
    assert server.host == "127.0.0.1"
    yield Site(framework, server, data)
    code, output = server.stop()
    assert code == 0, output


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# -- routing ---------------------------------------------------------------------


def test_routes_and_404(site):
    r = site.get("/")
    assert (r.status_code, r.text) == (200, "Hello from %s\n" % site.framework.title())
    r = site.get("/hello/alice")
    assert (r.status_code, r.json()) == (200, {"hello": "alice"})
    assert site.get("/no/such/route").status_code == 404


# -- request bodies ----------------------------------------------------------------


def test_urlencoded_form(site):
    fields = {"name": "Zoë & co", "colour": "blue=green", "empty": ""}
    r = site.post("/form", data=fields)
    assert r.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert (r.status_code, r.json()) == (200, fields)


def test_multipart_upload_3mb(site):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    r = site.post(
        "/upload",
        files={"file": ("payload.bin", payload, "application/octet-stream")},
        data={"note": "three megabytes"},
    )
    assert r.request.headers["Content-Type"].startswith("multipart/form-data")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "filename": "payload.bin",
        "size": len(payload),
        "sha256": sha256(payload),
        "note": "three megabytes",
    }


# -- responses ----------------------------------------------------------------------


def test_streamed_response(site):
    r = site.get("/stream?n=200")
    assert r.status_code == 200
    # A generator of unknown length goes out chunked on HTTP/1.1.
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in r.headers
    assert r.text == "".join("line %d\n" % i for i in range(200))


def test_file_response_goes_through_the_file_wrapper(site):
    r = site.get("/file")
    assert r.status_code == 200
    assert r.headers["X-File-Wrapper"] == WRAPPER
    if site.framework != "django":
        # Django wraps its FileResponse with environ["wsgi.file_wrapper"]
        # after the view returns; the others show what they return.
        assert r.headers["X-Body-Iterable"] == WRAPPER
    assert r.headers["Content-Length"] == str(FILE_SIZE)
    assert len(r.content) == FILE_SIZE
    assert sha256(r.content) == sha256(site.data)


@pytest.mark.parametrize(
    "header, start, end",
    [("bytes=1000-1999", 1000, 1999), ("bytes=-500", FILE_SIZE - 500, FILE_SIZE - 1),
     ("bytes=1048000-", 1048000, FILE_SIZE - 1)],
)
def test_range_request(site, header, start, end):
    r = site.get("/file", headers={"Range": header})
    if site.framework == "django":
        # Django's FileResponse does not implement ranges: the whole file.
        assert r.status_code == 200
        assert "Content-Range" not in r.headers
        assert sha256(r.content) == sha256(site.data)
        return
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes %d-%d/%d" % (start, end, FILE_SIZE)
    assert r.headers["Content-Length"] == str(end - start + 1)
    assert r.content == site.data[start:end + 1]


def test_cookies(site):
    s = site.session()
    r = site.get("/cookie/set?value=chocolate", session=s)
    assert r.status_code == 200
    assert r.headers["Set-Cookie"].startswith("flavour=chocolate")
    assert s.cookies.get("flavour") == "chocolate"
    r = site.get("/cookie", session=s)
    assert r.json() == {"flavour": "chocolate"}
    assert site.get("/cookie").json() == {"flavour": None}


def test_redirect(site):
    r = site.get("/redirect", allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] in ("/hello/redirected", site.base + "/hello/redirected")
    r = site.get("/redirect")
    assert (r.status_code, r.json()) == (200, {"hello": "redirected"})
    assert [h.status_code for h in r.history] == [302]


def test_app_error_is_500_and_the_server_goes_on(site):
    s = site.session()
    for _ in range(3):
        r = site.get("/error", session=s)
        assert r.status_code == 500
        assert "an application error" not in r.text  # no traceback shown
        r = site.get("/", session=s)
        assert r.status_code == 200
    assert site.server.proc.poll() is None
