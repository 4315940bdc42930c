"""Marking pages for the bigcache proxy.

    @bigcache_page("28d")
    def dataset(request, pk): ...

adds ``X-Bigcache-TTL: 28d`` to the view's successful responses, which the
proxy reads (and strips) to cache the page for that long. bigcache still
refuses to cache what is not safe to share: responses that set cookies, are
``Cache-Control: private``/``no-store``, or answer a logged-in request.
"""

import functools

from asgiref.sync import iscoroutinefunction

from .client import log

TTL_HEADER = "X-Bigcache-TTL"


def bigcache_page(duration, statuses=(200,)):
    """Caches the view's responses with ``statuses`` for ``duration``
    (``"30s"``, ``"6h"``, ``"28d"``, or seconds as an int). Works on
    ``async def`` views too."""
    if isinstance(duration, int):
        duration = f"{duration}s"

    def mark(request, response):
        if response.status_code in statuses and request.method in ("GET", "HEAD"):
            response[TTL_HEADER] = duration
        else:
            log.debug("not marking %s %s for bigcache", request.method, request.path)
        return response

    def decorate(view):
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def wrapped_async(request, *args, **kwargs):
                return mark(request, await view(request, *args, **kwargs))

            return wrapped_async

        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            return mark(request, view(request, *args, **kwargs))

        return wrapped

    return decorate
