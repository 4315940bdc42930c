"""Marking pages for the bigcache proxy.

    @bigcache_page("28d", tags=lambda request, pk: [f"dataset-{pk}"])
    def dataset(request, pk): ...

adds ``X-Bigcache-TTL: 28d`` to the view's successful responses, which the
proxy reads (and strips) to cache the page for that long, and with ``tags``
a ``Surrogate-Key`` naming the tags ``purge_tags`` purges it by (a list, or
a function of the view's arguments). bigcache still
refuses to cache what is not safe to share: responses that set cookies, are
``Cache-Control: private``/``no-store``, or answer a logged-in request.

It also adds ``X-Bigcache-Vary-Cookies``, naming the cookies the page was
made from: the CSRF cookie when the page used its token, and the cookies
the view says it reads (``cookies=``). Django adds ``Vary: Cookie`` to any
page that touches the session (a template reading ``user``), which would
make each anonymous visitor carrying a cookie a copy of their own; with no
cookie named, bigcache keeps one copy for them all (browsers still see
Django's ``Vary``). A logged-in visitor's session cookie bypasses the cache
either way.
"""

import functools

from asgiref.sync import iscoroutinefunction
from django.conf import settings

from .client import log
from .tags import add_tags

TTL_HEADER = "X-Bigcache-TTL"
VARY_COOKIES_HEADER = "X-Bigcache-Vary-Cookies"


def made_from(request, response, cookies=()):
    """Names the cookies ``response`` was made from in
    ``X-Bigcache-Vary-Cookies``: ``cookies``, the CSRF cookie when the page
    used its token (``{% csrf_token %}``, ``get_token``), and the session
    cookie when the page read a session the request named. The proxy
    bypasses requests with its ``--session-cookie``; should that name not
    match ``SESSION_COOKIE_NAME``, naming it here still keeps a logged-in
    page from being stored for everyone."""
    names = list(cookies)
    if request.META.get("CSRF_COOKIE_NEEDS_UPDATE") or request.META.get("CSRF_COOKIE_USED"):
        names.append(settings.CSRF_COOKIE_NAME)
    session = getattr(request, "session", None)
    if getattr(session, "accessed", False) and settings.SESSION_COOKIE_NAME in request.COOKIES:
        names.append(settings.SESSION_COOKIE_NAME)
    response[VARY_COOKIES_HEADER] = ", ".join(dict.fromkeys(names))
    return response


def bigcache_page(duration, statuses=(200,), tags=None, cookies=()):
    """Caches the view's responses with ``statuses`` for ``duration``
    (``"30s"``, ``"6h"``, ``"28d"``, or seconds as an int), tagged with
    ``tags``: a list of tags, or a function called like the view
    (``request, *args, **kwargs``) that returns them. ``cookies``: the
    names of cookies the view reads itself (``request.COOKIES``), which
    then key the page's copies. Works on ``async def`` views too."""
    if isinstance(duration, int):
        duration = f"{duration}s"

    def mark(request, response, args, kwargs):
        if response.status_code in statuses and request.method in ("GET", "HEAD"):
            response[TTL_HEADER] = duration
            if tags is not None:
                names = tags(request, *args, **kwargs) if callable(tags) else tags
                add_tags(response, *names)
            # A TemplateResponse renders after the view returns: whether it
            # used the CSRF token is known only then.
            if getattr(response, "is_rendered", True):
                made_from(request, response, cookies)
            else:
                response.add_post_render_callback(lambda r: made_from(request, r, cookies))
        else:
            log.debug("not marking %s %s for bigcache", request.method, request.path)
        return response

    def decorate(view):
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def wrapped_async(request, *args, **kwargs):
                return mark(request, await view(request, *args, **kwargs), args, kwargs)

            return wrapped_async

        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            return mark(request, view(request, *args, **kwargs), args, kwargs)

        return wrapped

    return decorate
