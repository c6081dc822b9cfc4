"""Sphinx configuration for the waitress_c documentation.

Build with ``make docs`` (HTML in build/docs, every warning an error).
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))

# The version's one source (read, not imported: no build needed).
_version = {}
with open(os.path.join(HERE, os.pardir, "waitress_c", "_version.py")) as f:
    exec(f.read(), _version)

project = "waitress_c"
author = "the waitress_c authors"
copyright = "the waitress_c authors; ZPL-2.1"
release = _version["__version__"]
version = ".".join(release.split(".")[:2])

root_doc = "index"
extensions = []
exclude_patterns = ["_build"]
html_static_path = ["_static"]

html_theme = "alabaster"
html_title = "waitress_c %s" % release
html_theme_options = {
    "description": "A WSGI server with waitress's behaviour and a C core",
    "page_width": "1100px",
    "sidebar_width": "230px",
    "fixed_sidebar": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
html_show_sourcelink = False

