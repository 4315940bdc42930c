"""Marking pages for the bigcache proxy.

    @bigcache_page("28d", tags=lambda request, pk: [f"dataset-{pk}"])
    def dataset(request, pk): ...

adds ``X-Bigcache-TTL: 28d`` to the view's successful responses, which the
proxy reads (and strips) to cache the page for that long, and with ``tags``
a ``Surrogate-Key`` naming the tags ``purge_tags`` purges it by (a list, or
a function of the view's arguments). bigcache still
refuses to cache what is not safe to share: responses that set cookies, are
``Cache-Control: private``/``no-store``, or answer a logged-in request.

With ``cookies=[...]`` it also says which cookies the page was made from
(``X-Bigcache-Vary-Cookies``). Django adds ``Vary: Cookie`` to any page
that touches the session (a template reading ``user``), which makes each
anonymous visitor carrying a cookie a copy of their own, or none; a page
you know is made from no cookie (``cookies=[]``) is then one copy for all
anonymous visitors (browsers still see Django's ``Vary``); naming some, it
varies by the whole ``Cookie`` (less the analytics cookies bigcache
ignores), as without the argument but with ``Vary: Cookie`` ensured.
Only you can say this: a middleware or template tag may read a cookie
the view never sees. The CSRF cookie when the page used its token, and the
session and language cookies whenever the request carries them, are
always named. Left out, ``Vary: Cookie`` counts as Django sent it.
"""

import functools

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.utils.cache import patch_vary_headers

from . import esi as esi_module
from .client import log
from .tags import add_tags

TTL_HEADER = "X-Bigcache-TTL"
VARY_COOKIES_HEADER = "X-Bigcache-Vary-Cookies"


def made_from(request, response, cookies):
    """Names the cookies ``response`` was made from in
    ``X-Bigcache-Vary-Cookies``: ``cookies``, the CSRF cookie when the page
    used its token (``{% csrf_token %}``, ``get_token``), and the session
    and language cookies whenever the request carries them (whoever reads
    them, and whenever: a middleware may after the view). Naming any, the
    page varies by cookie whatever Django said."""
    names = list(cookies)
    if request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
        names.append(settings.CSRF_COOKIE_NAME)
    for carried in (settings.SESSION_COOKIE_NAME, settings.LANGUAGE_COOKIE_NAME):
        if carried in request.COOKIES:
            names.append(carried)
    names = list(dict.fromkeys(names))
    if names:
        patch_vary_headers(response, ["Cookie"])
    response[VARY_COOKIES_HEADER] = ", ".join(names)
    return response


def bigcache_page(duration, statuses=(200,), tags=None, cookies=None, esi=False):
    """Caches the view's responses with ``statuses`` for ``duration``
    (``"30s"``, ``"6h"``, ``"28d"``, or seconds as an int), tagged with
    ``tags``: a list of tags, or a function called like the view
    (``request, *args, **kwargs``) that returns them. ``cookies``: the
    cookies the page's content is made from (``[]``: none), for pages whose
    ``Vary: Cookie`` says more than that (see the module's doc). Works on
    ``async def`` views too.

    ``esi=True``: the page is a shell for every visitor, logged in or not,
    with per-visitor parts as fragments (``django_bigcache.esi``): the view
    runs with an anonymous copy of the request, and the page is marked for
    bigcache's ESI."""
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
            if cookies is not None and getattr(response, "is_rendered", True):
                made_from(request, response, cookies)
            elif cookies is not None:
                response.add_post_render_callback(lambda r: made_from(request, r, cookies))
        else:
            log.debug("not marking %s %s for bigcache", request.method, request.path)
        return response

    def shell(request, anon, response, args, kwargs):
        # Rendered now, while the anonymous copy is the one in its context.
        if hasattr(response, "render") and not getattr(response, "is_rendered", True):
            response.render()
        if esi_module.used_csrf_token(anon):
            log.error("%s: an ESI shell used the CSRF token ({%% csrf_token %%}); not cached. "
                      "Use {%% bigcache_csrf_token %%} in shells.", request.path)
            response["Cache-Control"] = "private, no-store"
            return response
        response = mark(request, response, args, kwargs)
        if TTL_HEADER in response and esi_module.through_bigcache(request):
            response["Surrogate-Control"] = esi_module.ESI_CONTROL
        return response

    def decorate(view):
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def wrapped_async(request, *args, **kwargs):
                if esi and request.method in ("GET", "HEAD"):
                    anon = esi_module.anonymous(request)
                    with esi_module.translation_override(anon):
                        response = await view(anon, *args, **kwargs)
                        return shell(request, anon, response, args, kwargs)
                return mark(request, await view(request, *args, **kwargs), args, kwargs)

            return wrapped_async

        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            # A shell is what a GET shows; a POST to the view is the
            # visitor's own, run as them.
            if esi and request.method in ("GET", "HEAD"):
                anon = esi_module.anonymous(request)
                with esi_module.translation_override(anon):
                    return shell(request, anon, view(anon, *args, **kwargs), args, kwargs)
            return mark(request, view(request, *args, **kwargs), args, kwargs)

        return wrapped

    return decorate
