from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("", views.index),
    path("hello/<str:name>", views.hello),
    path("form", views.form),
    path("upload", views.upload),
    path("stream", views.stream),
    path("file", views.file),
    path("cookie/set", views.set_cookie),
    path("cookie", views.get_cookie),
    path("redirect", views.to_hello),
    path("error", views.error),
]
