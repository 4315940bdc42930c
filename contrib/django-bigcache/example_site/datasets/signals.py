"""The purge-on-save recipe: when a dataset changes, its page and the list
pages are dropped from bigcache, so the next visitor gets a fresh render."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from django_bigcache import purge_path, purge_prefix

from .models import Dataset


@receiver([post_save, post_delete], sender=Dataset)
def purge_dataset_pages(sender, instance, **kwargs):
    purge_path(instance.get_absolute_url())
    purge_prefix("/datasets/")
