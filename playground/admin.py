from django.contrib import admin

from billing.ledger import fmt

from .models import AIModel, Job, MediaFile

PRICE_HELP = {
    "per_request": "Credits per job, whatever it produces.",
    "per_1k_input": "Credits per 1,000 input (prompt) tokens.",
    "per_1k_output": "Credits per 1,000 generated tokens; the hold assumes max_tokens.",
    "per_image": "Credits per image produced.",
    "per_second": "Credits per second of video or audio produced.",
}


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
        "prices",
    ]
    list_filter = ["modality", "backend", "queue", "enabled", "builtin"]
    search_fields = ["slug", "name"]

    @admin.display(description="Prices (credits)")
    def prices(self, obj):
        parts = [
            f"{fmt(getattr(obj, name))} {label}"
            for name, label in [
                ("per_request", "/request"),
                ("per_1k_input", "/1K in"),
                ("per_1k_output", "/1K out"),
                ("per_image", "/image"),
                ("per_second", "/s"),
            ]
            if getattr(obj, name)
        ]
        return ", ".join(parts) or "free"

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        for name, text in PRICE_HELP.items():
            if name in form.base_fields:
                form.base_fields[name].help_text = text + " Changes apply to new jobs at once."
        return form


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
