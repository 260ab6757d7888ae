from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PlaygroundConfig(AppConfig):
    name = "playground"

    def ready(self):
        from . import timing  # noqa: F401  (times every query of a /v1 request)
        from .catalogue import sync_after_migrate

        post_migrate.connect(sync_after_migrate, sender=self)
