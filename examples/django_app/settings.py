"""Settings of the example project: no database, no templates, no
middleware (so no CSRF check on the example forms)."""

DEBUG = False
# An example only: a real project reads its key from the environment.
SECRET_KEY = "waitress_c-example-not-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
TEMPLATES = []
USE_TZ = True
