"""The jobs pages: dashboard, history, job detail, cancel, re-run, public share links."""

import secrets
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from billing import ledger

from . import catalogue, jobs, media, webhooks
from .errors import ApiError
from .models import Job

PER_PAGE = 20


def _job_or_404(user, request_id) -> Job:
    try:
        return jobs.get_job_for_user(user, request_id)
    except ApiError:
        raise Http404("No such job") from None


def _recent(user, count=8):
    return list(Job.objects.filter(user=user).order_by("-created", "-id")[:count])


@login_required
def dashboard(request):
    balance, available = ledger.balances(request.user)
    keys = list(request.user.api_keys.all())
    context = {
        "balance": ledger.fmt(balance),
        "available": ledger.fmt(available),
        "held": ledger.fmt(balance - available),
        "recent": _recent(request.user),
        "active_keys": [k for k in keys if k.status == "active"],
        "key_count": len(keys),
        "models": list(catalogue.visible_models()[:6]),
    }
    return render(request, "playground/dashboard.html", context)


@login_required
def recent_jobs(request):
    """htmx: the dashboard's recent jobs, refetched when the user's websocket says one changed."""
    return render(request, "playground/dashboard.html#recent", {"recent": _recent(request.user)})


@login_required
def jobs_page(request):
    qs = Job.objects.filter(user=request.user).order_by("-created", "-id")
    model = request.GET.get("model", "")
    status = request.GET.get("status", "")
    if model:
        qs = qs.filter(model_slug=model)
    if status in dict(Job.STATUSES):
        qs = qs.filter(status=status)
    else:
        status = ""
    page = Paginator(qs, PER_PAGE).get_page(request.GET.get("page"))
    filters = urlencode({k: v for k, v in (("model", model), ("status", status)) if v})
    slugs = (
        Job.objects.filter(user=request.user)
        .order_by("model_slug")
        .values_list("model_slug", flat=True)
        .distinct()
    )
    context = {
        "page": page,
        "model": model,
        "status": status,
        "statuses": [s for s, _ in Job.STATUSES],
        "slugs": list(slugs),
        "filters": filters,
    }
    return render(request, "playground/jobs.html", context)


def _detail_context(request, job: Job) -> dict:
    return {
        "job": job,
        "doc": jobs.status_document(job, media.base_url(request)),
        "params": job.params,
        "webhook_deliveries": webhooks.deliveries_for(job),
    }


@login_required
def job_page(request, request_id):
    job = _job_or_404(request.user, request_id)
    context = _detail_context(request, job)
    if job.share_token:
        context["share_url"] = request.build_absolute_uri(
            reverse("shared-job", args=[job.share_token])
        )
    return render(request, "playground/job.html", context)


@login_required
@require_POST
def cancel(request, request_id):
    job = jobs.cancel_job(_job_or_404(request.user, request_id))
    if request.htmx:
        return render(request, "playground/_job_panel.html", _detail_context(request, job))
    messages.info(request, f"Job is {job.status}.")
    return redirect("job", request_id=job.request_id)


@login_required
@require_POST
def rerun(request, request_id):
    """A new job with the same parameters, at once; its page opens."""
    old = _job_or_404(request.user, request_id)
    model = catalogue.get_model(old.model_slug)
    if model is None:
        messages.error(request, "That model is no longer available.")
        return redirect("job", request_id=old.request_id)
    try:
        job = jobs.submit_job(
            request.user, model, jobs.validate_params(model, old.params, user=request.user)
        )
    except ApiError as exc:
        messages.error(request, exc.message)
        return redirect("job", request_id=old.request_id)
    return redirect("job", request_id=job.request_id)


@login_required
@require_POST
def share(request, request_id):
    job = _job_or_404(request.user, request_id)
    if request.POST.get("action") == "revoke":
        Job.objects.filter(pk=job.pk).update(share_token=None)
        messages.info(request, "The share link is revoked; it no longer opens.")
    elif not job.share_token:
        Job.objects.filter(pk=job.pk).update(share_token=secrets.token_urlsafe(24))
        messages.success(request, "Anyone with the link can now see this job (read-only).")
    return redirect("job", request_id=job.request_id)


def shared_job(request, token):
    """A job shared by its owner: read-only, for anyone with the link, nothing about the owner."""
    job = Job.objects.filter(share_token=token).select_related("model").first() if token else None
    if job is None:
        raise Http404("No such shared job")
    return render(request, "playground/shared.html", _detail_context(request, job))
