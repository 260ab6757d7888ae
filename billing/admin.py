from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from . import ledger, redeem
from .forms import BatchForm, GrantForm
from .models import CreditAccount, LedgerEntry, Payment, RedeemCode, StripeEvent


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
    list_display = ["user", "available", "held", "low_balance_threshold", "grant_link"]
    search_fields = ["user__email"]
    readonly_fields = ["user", "available", "held", "low_balance_threshold", "grant_link"]
    exclude = ["low_balance_armed"]

    @admin.display(description="Credits")
    def grant_link(self, obj):
        # No ledger inline: an account can have millions of rows; link to the filtered list.
        return format_html(
            '<a href="{}">Grant or adjust…</a> · <a href="{}?account__id__exact={}">Ledger</a>',
            reverse("admin:billing_creditaccount_grant", args=[obj.pk]),
            reverse("admin:billing_ledgerentry_changelist"),
            obj.pk,
        )

    def get_urls(self):
        own = [
            path(
                "<int:pk>/grant/",
                self.admin_site.admin_view(self.grant_view),
                name="billing_creditaccount_grant",
            )
        ]
        return own + super().get_urls()

    def grant_view(self, request, pk):
        """Operator grant or adjustment: a ledger row naming the staff user who made it."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        account = get_object_or_404(CreditAccount, pk=pk, user__isnull=False)
        form = GrantForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            reason = f"operator {request.user.email}: {data['reason']}"
            try:
                if data["kind"] == "grant":
                    ledger.grant(account.user, data["amount"], reason, operator=request.user)
                else:
                    ledger.adjust(account.user, data["amount"], reason, operator=request.user)
            except ledger.InsufficientCredits as exc:
                form.add_error("amount", str(exc))
            else:
                self.message_user(
                    request,
                    f"{data['kind'].capitalize()} of {ledger.fmt(data['amount'])} credits "
                    f"recorded for {account.user}.",
                    messages.SUCCESS,
                )
                return redirect("admin:billing_creditaccount_change", pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Grant or adjust credits: {account.user}",
            "opts": self.model._meta,
            "original": account,
            "form": form,
            "recent": account.entries.select_related("job", "operator")[:20],
        }
        return TemplateResponse(request, "admin/billing/grant.html", context)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    """Read-only: the ledger is append-only; corrections are new rows (grant or adjustment)."""

    list_display = ["created", "account", "kind", "amount", "job", "payment", "operator", "reason"]
    list_filter = ["kind"]
    search_fields = ["account__user__email", "reason"]
    list_select_related = ["account__user", "job", "payment", "operator"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["created", "account", "credits", "price", "currency", "status", "credited"]
    list_filter = ["status"]
    search_fields = ["public_id", "checkout_session", "payment_intent", "account__user__email"]
    readonly_fields = [f.name for f in Payment._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = ["received", "type", "event_id", "payment"]
    list_filter = ["type"]
    search_fields = ["event_id", "payment_intent"]
    readonly_fields = [f.name for f in StripeEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.action(description="Export the selected codes as CSV")
def export_codes(modeladmin, request, queryset):
    lines = ["code,amount,max_uses,uses,expires_at,batch"]
    for c in queryset.order_by("id"):
        expires = c.expires_at.isoformat() if c.expires_at else ""
        lines.append(f"{c.code},{ledger.fmt(c.amount)},{c.max_uses},{c.uses},{expires},{c.batch}")
    response = HttpResponse("\n".join(lines) + "\n", content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="redeem-codes.csv"'
    return response


@admin.register(RedeemCode)
class RedeemCodeAdmin(admin.ModelAdmin):
    list_display = ["code", "amount", "uses", "max_uses", "expires_at", "batch", "created"]
    list_filter = ["batch"]
    search_fields = ["code", "batch"]
    readonly_fields = ["code", "uses", "created_by", "created"]
    actions = [export_codes]
    change_list_template = "admin/billing/redeemcode_changelist.html"

    def get_urls(self):
        own = [
            path(
                "batch/",
                self.admin_site.admin_view(self.batch_view),
                name="billing_redeemcode_batch",
            )
        ]
        return own + super().get_urls()

    def batch_view(self, request):
        """Create N codes of one amount, expiry and max uses; shows them once, for copying."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BatchForm(request.POST or None)
        created = []
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            created = redeem.create_batch(
                data["count"],
                data["amount"],
                expires_at=data["expires_at"],
                max_uses=data["max_uses"],
                batch=data["batch"],
                by=request.user,
            )
            self.message_user(request, f"{len(created)} codes created.", messages.SUCCESS)
        context = {
            **self.admin_site.each_context(request),
            "title": "Create a batch of redeem codes",
            "opts": self.model._meta,
            "form": form,
            "created": created,
        }
        return TemplateResponse(request, "admin/billing/batch.html", context)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
