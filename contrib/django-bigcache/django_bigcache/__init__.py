"""Django integration for bigcache.

- ``django_bigcache.backend.BigCacheBackend``: a cache backend for ``CACHES``.
- ``django_bigcache.purge``: purge cached pages by path, prefix or tag
  (hard or soft), on every node; ``python manage.py bigcache_purge`` does it from a shell (with
  ``"django_bigcache"`` in ``INSTALLED_APPS``).
- ``django_bigcache.decorators.bigcache_page``: mark a view's pages cacheable
  by the bigcache proxy, and tag them; ``django_bigcache.tags.add_tags``
  tags a response from inside a view.
- ``django_bigcache.BigCache``: the original connector's class, kept so code
  written for it works after ``pip install``.
"""

from .compat import BigCache
from .decorators import bigcache_page
from .purge import PurgeResult, purge, purge_path, purge_prefix, purge_tags
from .tags import add_tags

__all__ = [
    "BigCache",
    "PurgeResult",
    "add_tags",
    "bigcache_page",
    "purge",
    "purge_path",
    "purge_prefix",
    "purge_tags",
]
