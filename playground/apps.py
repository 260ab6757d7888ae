from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate


class PlaygroundConfig(AppConfig):
    name = "playground"

    def ready(self):
        from . import timing  # noqa: F401  (times every query of a /v1 request)
        from .catalogue import sync_after_migrate

        post_migrate.connect(sync_after_migrate, sender=self)

        from .media import delete_after_row
        from .models import MediaFile

        # Rows go with their user or job (cascades); the stored bytes must go with them.
        post_delete.connect(delete_after_row, sender=MediaFile)
