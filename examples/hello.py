"""The smallest WSGI app: `make serve` serves it on http://127.0.0.1:8080."""


def app(environ, start_response):
    body = b"Hello, world!"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
