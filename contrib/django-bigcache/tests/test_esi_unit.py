"""The connector's ESI pieces against Django's request factory: what an
anonymous shell can see, which methods are rendered as one, and what a
fragment's public URL may pass to its view (the example site's end-to-end
test runs them through the proxy: test_esi.py)."""

from django.http import Http404, HttpResponse
from django.test import RequestFactory

import pytest

from django_bigcache import bigcache_page
from django_bigcache.esi import anonymous, fragment, fragment_view

CAP = {"HTTP_SURROGATE_CAPABILITY": 'bigcache="ESI/1.0"'}


class User:
    is_authenticated = True
    username = "alice"


def visitor(method="get", **extra):
    r = getattr(RequestFactory(), method)("/p/", HTTP_COOKIE="sessionid=s; csrftoken=t; django_language=de",
                                          HTTP_AUTHORIZATION="Bearer x", HTTP_ACCEPT_LANGUAGE="fr", **CAP, **extra)
    r.user = User()
    r.session = {"secret": 1}
    r._messages = ["visitor's flash"]
    r.LANGUAGE_CODE = "de"
    assert r.headers["Cookie"]  # cached on the request, as a middleware reading it leaves it
    return r


def test_an_anonymous_copy_sees_nothing_of_the_visitor():
    r = visitor(REMOTE_USER="alice")
    anon = anonymous(r)
    assert not anon.user.is_authenticated
    assert anon.COOKIES == {} and dict(anon.session) == {}
    for name in ("HTTP_COOKIE", "HTTP_AUTHORIZATION", "REMOTE_USER"):
        assert name not in anon.META
    assert "Cookie" not in anon.headers and "Authorization" not in anon.headers
    assert list(anon._messages) == []
    assert anon.LANGUAGE_CODE == "fr", "Accept-Language, not the visitor's cookie"
    # The visitor's own request is left as it was.
    assert r.user.username == "alice" and "HTTP_COOKIE" in r.META and list(r._messages)


def test_a_shell_is_rendered_as_anonymous_for_get_only():
    seen = []

    @bigcache_page("1h", esi=True)
    def page(request):
        seen.append(request.user.is_authenticated)
        return HttpResponse("shell")

    get = page(visitor())
    assert seen == [False] and get["Surrogate-Control"] == 'content="ESI/1.0"'
    post = page(visitor("post"))
    assert seen == [False, True], "a POST is the visitor's own"
    assert "Surrogate-Control" not in post


def test_a_shell_that_used_the_csrf_token_is_not_cached():
    from django.middleware.csrf import get_token

    @bigcache_page("1h", esi=True)
    def page(request):
        return HttpResponse(f"<input value={get_token(request)}>")

    r = page(visitor())
    assert r["Cache-Control"] == "private, no-store"
    assert "X-Bigcache-TTL" not in r and "Surrogate-Control" not in r


@fragment("unit-star")
def star(request, dataset):
    return f"star {dataset} {request.user.is_authenticated}"


@fragment("unit-shared", ttl="1h")
def shared(request):
    return f"shared {request.user.is_authenticated}"


def test_a_fragment_takes_only_the_parameters_its_view_names():
    r = RequestFactory().get("/_fragments/unit-star/?dataset=4&request=x&other=1")
    r.user = User()
    response = fragment_view(r, "unit-star")
    assert response.content == b"star 4 True"
    assert response["Cache-Control"] == "private, no-store"
    with pytest.raises(Http404):
        fragment_view(RequestFactory().get("/_fragments/unit-star/"), "unit-star")
    with pytest.raises(Http404):
        fragment_view(RequestFactory().get("/_fragments/nope/"), "nope")


def test_a_shared_fragment_is_rendered_as_anonymous_and_opted_in():
    r = visitor()
    response = fragment_view(r, "unit-shared")
    assert response.content == b"shared False"
    assert response["X-Bigcache-TTL"] == "1h"
    assert response["Surrogate-Control"] == 'content="ESI/1.0"'
