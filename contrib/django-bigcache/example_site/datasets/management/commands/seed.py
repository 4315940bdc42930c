from django.core.management.base import BaseCommand

from datasets.models import Dataset


class Command(BaseCommand):
    help = "Creates N example datasets."

    def add_arguments(self, parser):
        parser.add_argument("n", type=int)

    def handle(self, n, **options):
        for i in range(Dataset.objects.count(), n):
            Dataset.objects.create(title=f"Dataset {i + 1}")
