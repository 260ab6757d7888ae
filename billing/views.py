"""The billing page, its forms, CSV exports, Stripe checkout and webhook, receipts."""

import csv
import logging

import stripe
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import charts, ledger, payments, redeem, reports
from .forms import RedeemForm, ThresholdForm
from .models import Payment

log = logging.getLogger(__name__)


def _cursor(request):
    try:
        return int(request.GET.get("before", ""))
    except ValueError:
        return None


@login_required
def billing_page(request, redeem_form=None, threshold_form=None, status=200):
    account = ledger.account_for(request.user)
    q = request.GET.get("q", "").strip()
    rows, next_before = reports.transactions_page(account, q, _cursor(request))
    context = {
        "account": account,
        "balance": ledger.fmt(account.balance),
        "available": ledger.fmt(account.available),
        "held": ledger.fmt(account.held),
        # No hold query at all in the usual case of nothing running.
        "holds": reports.open_holds(request.user)[:20] if account.held else [],
        "hold_count": reports.open_holds(request.user).count() if account.held else 0,
        "rows": rows,
        "q": q,
        "next_before": next_before,
        "paged": _cursor(request) is not None,
        "redeem_form": redeem_form or RedeemForm(),
        "threshold_form": threshold_form
        or ThresholdForm(
            initial={
                "threshold": ledger.fmt(account.low_balance_threshold)
                if account.low_balance_threshold is not None
                else ""
            }
        ),
        "stripe_ready": payments.configured(),
        "packs": payments.packs(),
        "purchases": account.payments.exclude(status=Payment.PENDING)[:10],
    }
    if request.htmx and request.htmx.target == "transactions":
        return render(request, "billing/billing.html#transactions", context)
    days, series, total = reports.daily_usage(account)
    series = charts.top_series(series)
    keys = reports.spend_by_key(account)
    context.update(
        {
            "day_chart": charts.stacked_days(days, series),
            "legend": [(label, colour, ledger.fmt(sum(a))) for label, a, colour in series],
            "month_total": ledger.fmt(total),
            "key_chart": charts.horizontal_bars(keys) if keys else "",
        }
    )
    return render(request, "billing/billing.html", context, status=status)


@login_required
@require_POST
def redeem_code(request):
    form = RedeemForm(request.POST)
    if form.is_valid():
        try:
            code = redeem.redeem(request.user, form.cleaned_data["code"])
        except redeem.RedeemError as exc:
            form.add_error("code", str(exc))
        else:
            messages.success(request, f"Code redeemed: {ledger.fmt(code.amount)} credits added.")
            return redirect("billing")
    return billing_page(request, redeem_form=form, status=400)


@login_required
@require_POST
def low_balance(request):
    form = ThresholdForm(request.POST)
    if not form.is_valid():
        return billing_page(request, threshold_form=form, status=400)
    threshold = form.cleaned_data["threshold"]
    ledger.set_low_balance_threshold(request.user, threshold)
    if threshold is None:
        messages.success(request, "Low-balance email switched off.")
    else:
        messages.success(
            request, f"We will email you when your credits fall below {ledger.fmt(threshold)}."
        )
    return redirect("billing")


@login_required
@require_POST
def buy(request):
    if not payments.configured():
        messages.error(request, "Top-ups are not configured on this site.")
        return redirect("billing")
    try:
        pack = payments.packs()[int(request.POST.get("pack", ""))]
    except (ValueError, IndexError):
        messages.error(request, "Choose one of the credit packs.")
        return redirect("billing")
    try:
        url = payments.start_checkout(
            request.user,
            pack,
            receipt_url=lambda ref: request.build_absolute_uri(reverse("receipt", args=[ref])),
            cancel_url=request.build_absolute_uri(reverse("billing")),
        )
    except stripe.StripeError:
        log.exception("Stripe checkout failed")
        messages.error(request, "The payment provider is unavailable; nothing was charged.")
        return redirect("billing")
    return redirect(url)


@csrf_exempt
@require_POST
def stripe_webhook(request):
    if not payments.configured():
        raise Http404("Top-ups are not configured")
    try:
        outcome = payments.handle_webhook(request.body, request.headers.get("Stripe-Signature"))
    except (ValueError, KeyError, stripe.SignatureVerificationError):
        return HttpResponseBadRequest("invalid payload or signature")
    log.info("stripe webhook: %s", outcome)
    return HttpResponse(outcome, content_type="text/plain")


@login_required
def receipt(request, payment_id):
    payment = get_object_or_404(Payment, public_id=payment_id, account__user=request.user)
    return render(request, "billing/receipt.html", {"payment": payment})


TRANSACTION_COLUMNS = "id time_utc kind amount request_id model payment code reason".split()


class _Echo:
    def write(self, value):
        return value


def _csv_response(rows, filename):
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in rows), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


CSV_CHUNK = 2000


@login_required
def transactions_csv(request):
    account = ledger.account_for(request.user)
    entries = (
        reports.search(account, request.GET.get("q", ""))
        .order_by("-id")
        .values_list(
            "id",
            "created",
            "kind",
            "amount",
            "job__request_id",
            "job__model_slug",
            "payment__public_id",
            "redeem_code__code",
            "reason",
        )
    )

    def rows():
        yield TRANSACTION_COLUMNS
        # Keyset chunks, each a short indexed query: the first bytes leave at once and no
        # transaction (or server-side cursor WITH HOLD, which materialises everything) stays open.
        before, size = None, 100  # a small first chunk: the first rows leave sooner
        while True:
            chunk = entries if before is None else entries.filter(id__lt=before)
            chunk = list(chunk[:size])
            for id_, created, kind, amount, job, model, payment, code, reason in chunk:
                yield [
                    id_,
                    created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    kind,
                    ledger.fmt(amount),
                    job or "",
                    model or "",
                    payment or "",
                    code or "",
                    reason,
                ]
            if len(chunk) < size:
                return
            before, size = chunk[-1][0], CSV_CHUNK

    return _csv_response(rows(), "transactions.csv")


@login_required
def usage_csv(request):
    account = ledger.account_for(request.user)

    def rows():
        yield ["day", "model", "api_key_prefix", "jobs", "credits"]
        for row in reports.usage_rows(account):
            yield [
                row["day"].isoformat(),
                row["model_slug"],
                row["api_key__prefix"] or "",
                row["jobs"],
                ledger.fmt(row["total"]),
            ]

    return _csv_response(rows(), "usage.csv")
