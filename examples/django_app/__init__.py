"""A small Django project served by waitress_c, without a database:

    waitress-c-serve --listen=127.0.0.1:8080 examples.django_app.wsgi:application

It has the routes of ``examples/flask_app.py`` (see ``views.py``).
"""
