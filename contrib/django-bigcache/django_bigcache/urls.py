"""The fragments' URLs: ``path("_fragments/", include("django_bigcache.urls"))``
(any prefix; the template tags find it by name)."""

from django.urls import path

from .esi import fragment_view

urlpatterns = [
    path("<slug:name>/", fragment_view, name="bigcache-fragment"),
]
