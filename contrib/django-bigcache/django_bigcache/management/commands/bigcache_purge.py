"""``python manage.py bigcache_purge /dataset/7/ --prefix /datasets/``: the
purge helpers from a shell (a deploy script, a cron job, an operator), on
every node in ``settings.BIGCACHE["LOCATION"]``. Exits non-zero when a node
could not be reached, naming it, so a script notices."""

from django.core.management.base import BaseCommand, CommandError

from django_bigcache.purge import purge


class Command(BaseCommand):
    help = "Purge cached pages by path or prefix on every bigcache node."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", metavar="path", help="a page's path, query included (every variant)")
        parser.add_argument("--prefix", action="append", default=[], help="every page whose path starts with this (repeatable)")

    def handle(self, *args, paths, prefix, **options):
        if not paths and not prefix:
            raise CommandError("name at least one path or --prefix")
        for p in paths + prefix:
            if not p.startswith("/"):
                raise CommandError(f"{p!r}: paths start with '/' (as Django's request.get_full_path() gives them)")
        result = purge(paths=paths, prefixes=prefix)
        reached = result.nodes - len(result.failed)
        self.stdout.write(f"purged {result.count} entries on {reached}/{result.nodes} nodes")
        if result.failed:
            raise CommandError(f"not reached: {', '.join(result.failed)}")
