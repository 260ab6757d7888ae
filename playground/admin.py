from django.contrib import admin

from .models import AIModel, Job, MediaFile


@admin.register(AIModel)
class AIModelAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "modality",
        "backend",
        "queue",
        "enabled",
        "builtin",
        "per_1k_output",
    ]
    list_filter = ["modality", "backend", "queue", "enabled", "builtin"]
    search_fields = ["slug", "name"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["request_id", "model_slug", "user", "status", "cost", "created"]
    list_filter = ["status", "modality"]
    search_fields = ["request_id", "model_slug", "user__email"]
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(MediaFile)
class MediaFileAdmin(admin.ModelAdmin):
    list_display = ["public_id", "user", "purpose", "filename", "content_type", "bytes", "created"]
    list_filter = ["purpose", "content_type"]
    search_fields = ["public_id", "user__email", "filename"]
    readonly_fields = [f.name for f in MediaFile._meta.fields]

    def has_add_permission(self, request):
        return False
