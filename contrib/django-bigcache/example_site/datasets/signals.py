"""The purge-on-save recipe: pages are tagged with the datasets they show
(`views.py`), so when a dataset changes, purging its tag drops its detail
page and every list page that shows it, and no other page. A new or deleted
dataset shifts every list page: those go by their common tag."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from django_bigcache import purge_tags

from .models import Dataset


@receiver(post_save, sender=Dataset)
def purge_saved_dataset(sender, instance, created, **kwargs):
    if created:
        purge_tags(f"dataset-{instance.pk}", "dataset-list")
    else:
        purge_tags(f"dataset-{instance.pk}")


@receiver(post_delete, sender=Dataset)
def purge_deleted_dataset(sender, instance, **kwargs):
    purge_tags(f"dataset-{instance.pk}", "dataset-list")
