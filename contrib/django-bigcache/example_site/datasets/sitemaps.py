from django.contrib.sitemaps import Sitemap

from .models import Dataset


class DatasetSitemap(Sitemap):
    """Every dataset page: the pages `bigcache warm` requests after a
    deploy or a purge, so the first visitor finds them cached."""

    changefreq = "daily"

    def items(self):
        return Dataset.objects.order_by("pk")
