from django.db import models
from django.db.models import F


class Dataset(models.Model):
    title = models.CharField(max_length=200)

    def get_absolute_url(self):
        return f"/dataset/{self.pk}/"


class RenderCount(models.Model):
    """How many times Django rendered a path: the tests' proof of what
    reached Django and what bigcache answered alone."""

    path = models.CharField(max_length=500, unique=True)
    n = models.IntegerField(default=0)

    @classmethod
    def bump(cls, path):
        obj, _ = cls.objects.get_or_create(path=path)
        cls.objects.filter(pk=obj.pk).update(n=F("n") + 1)
