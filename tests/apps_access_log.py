"""WSGI application for tests/test_access_log.py: apps_hardening's routes,
behind a middleware that sets environ values from the query the way an
authentication middleware sets REMOTE_USER from what a client sent:
``?user=`` sets REMOTE_USER, ``?foo=`` sets FOO.  Query values are decoded
as latin-1, so ``%0A`` or ``%85`` arrive as those characters."""

import apps_hardening
from apps_http import _q


def router(environ, start_response):
    q = _q(environ)
    if "user" in q:
        environ["REMOTE_USER"] = q["user"]
    if "foo" in q:
        environ["FOO"] = q["foo"]
    return apps_hardening.router(environ, start_response)
