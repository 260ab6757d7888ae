from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from . import keys
from .models import ApiKey, KeyEvent, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "tier", "is_staff", "is_active", "date_joined"]
    list_filter = ["tier", "is_staff", "is_active"]
    search_fields = ["email"]
    fieldsets = [
        (None, {"fields": ["email", "password", "tier"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


@admin.action(description="Revoke the selected keys")
def revoke_keys(modeladmin, request, queryset):
    revoked = sum(keys.revoke(key, ip=request.META.get("REMOTE_ADDR")) for key in queryset)
    modeladmin.message_user(request, f"{revoked} key(s) revoked.", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "tier", "status", "created", "last_used_at"]
    list_filter = ["tier", "revoked_at"]
    search_fields = ["prefix", "name", "user__email"]
    actions = [revoke_keys]
    # Never the hash, never a secret: the admin shows what the owner sees.
    exclude = ["hashed", "previous_hashed"]
    readonly_fields = [
        "public_id",
        "user",
        "prefix",
        "previous_prefix",
        "previous_valid_until",
        "created",
        "rotated_at",
        "last_used_at",
        "last_used_ip",
        "revoked_at",
    ]

    def has_add_permission(self, request):
        return False  # keys are created by their owners (or `apikey create`), shown once


@admin.register(KeyEvent)
class KeyEventAdmin(admin.ModelAdmin):
    list_display = ["created", "kind", "key_prefix", "key_name", "user", "ip", "detail"]
    list_filter = ["kind"]
    search_fields = ["key_prefix", "key_name", "user__email", "detail", "ip"]
    date_hierarchy = "created"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
