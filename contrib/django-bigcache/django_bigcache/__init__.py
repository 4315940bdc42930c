"""Django integration for bigcache.

- ``django_bigcache.backend.BigCacheBackend``: a cache backend for ``CACHES``.
- ``django_bigcache.purge``: purge cached pages by path or prefix.
- ``django_bigcache.decorators.bigcache_page``: mark a view's pages cacheable
  by the bigcache proxy.
- ``django_bigcache.BigCache``: the original connector's class, kept so code
  written for it works after ``pip install``.
"""

from .compat import BigCache
from .decorators import bigcache_page
from .purge import purge_path, purge_prefix

__all__ = ["BigCache", "bigcache_page", "purge_path", "purge_prefix"]
