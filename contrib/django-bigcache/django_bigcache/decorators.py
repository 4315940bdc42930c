"""Marking pages for the bigcache proxy.

    @bigcache_page("28d", tags=lambda request, pk: [f"dataset-{pk}"])
    def dataset(request, pk): ...

adds ``X-Bigcache-TTL: 28d`` to the view's successful responses, which the
proxy reads (and strips) to cache the page for that long, and with ``tags``
a ``Surrogate-Key`` naming the tags ``purge_tags`` purges it by (a list, or
a function of the view's arguments). bigcache still
refuses to cache what is not safe to share: responses that set cookies, are
``Cache-Control: private``/``no-store``, or answer a logged-in request.
"""

import functools

from asgiref.sync import iscoroutinefunction

from .client import log
from .tags import add_tags

TTL_HEADER = "X-Bigcache-TTL"


def bigcache_page(duration, statuses=(200,), tags=None):
    """Caches the view's responses with ``statuses`` for ``duration``
    (``"30s"``, ``"6h"``, ``"28d"``, or seconds as an int), tagged with
    ``tags``: a list of tags, or a function called like the view
    (``request, *args, **kwargs``) that returns them. Works on ``async
    def`` views too."""
    if isinstance(duration, int):
        duration = f"{duration}s"

    def mark(request, response, args, kwargs):
        if response.status_code in statuses and request.method in ("GET", "HEAD"):
            response[TTL_HEADER] = duration
            if tags is not None:
                names = tags(request, *args, **kwargs) if callable(tags) else tags
                add_tags(response, *names)
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
