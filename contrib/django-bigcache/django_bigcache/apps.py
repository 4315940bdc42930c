from django.apps import AppConfig


class BigCacheConfig(AppConfig):
    """``"django_bigcache"`` in ``INSTALLED_APPS``: the system checks
    (``checks``) and the ``bigcache_purge`` management command."""

    name = "django_bigcache"
    verbose_name = "bigcache"

    def ready(self):
        from . import checks  # noqa: F401  (registers the checks)
