from django.contrib import admin

from .models import CreditAccount, LedgerEntry


class LedgerInline(admin.TabularInline):
    model = LedgerEntry
    extra = 0
    can_delete = False
    readonly_fields = ["kind", "amount", "job", "reason", "created"]
    ordering = ["-id"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
    list_display = ["user", "available", "held"]
    search_fields = ["user__email"]
    readonly_fields = ["user", "available", "held"]
    inlines = [LedgerInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    """Read-only: the ledger is append-only; corrections are new rows (`credits grant`)."""

    list_display = ["created", "account", "kind", "amount", "job", "reason"]
    list_filter = ["kind"]
    search_fields = ["account__user__email", "reason"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
