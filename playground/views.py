"""The playground pages: catalogue, model page with its form, job page."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import catalogue, jobs, pricing, webhooks
from .errors import ApiError, error_body
from .forms import form_fields, parse_form
from .schemas import json_schema


def home(request):
    return redirect("catalogue")


def catalogue_page(request):
    models = catalogue.visible_models()
    return render(request, "playground/catalogue.html", {"models": models})


def _model_or_404(slug):
    model = catalogue.get_model(slug)
    if model is None:
        raise Http404("No such model")
    return model


def model_page(request, slug, values=None, error=None, status=200):
    model = _model_or_404(slug)
    context = {
        "model": model,
        "fields": form_fields(json_schema(model), values),
        "pricing": pricing.pricing_document(model),
        "error": error,
    }
    return render(request, "playground/model.html", context, status=status)


@login_required
@require_POST
def run_model(request, slug):
    model = _model_or_404(slug)
    values = parse_form(json_schema(model), request.POST)
    try:
        params = jobs.validate_params(model, values)
        job = jobs.submit_job(request.user, model, params)
    except ApiError as exc:
        if request.htmx:
            return render(request, "playground/model.html#run-error", {"error": exc})
        return model_page(request, slug, values=values, error=exc, status=exc.status)
    if not request.htmx:
        return redirect("job", request_id=job.request_id)
    doc = jobs.status_document(job)
    return render(request, "playground/model.html#job-panel", {"job": job, "doc": doc})


@login_required
def job_page(request, request_id):
    try:
        job = jobs.get_job_for_user(request.user, request_id)
    except ApiError:
        raise Http404("No such job") from None
    doc = jobs.status_document(job)
    context = {"job": job, "doc": doc, "webhook_deliveries": webhooks.deliveries_for(job)}
    return render(request, "playground/job.html", context)


@login_required
def balance(request):
    """The header's balance pill, refreshed by htmx when a job on the page finishes."""
    return render(request, "playground/balance.html")


async def healthz(request):
    """A bare async JSON view: liveness for operators and the baseline of the API benches.

    Served by the /v1 handler under ASGI (playground/asgi.py), so no page middleware either.
    """
    return JsonResponse({"status": "ok"})


def api_not_found(request, *args, **kwargs):
    body = error_body(404, "not_found", f"Unknown endpoint {request.method} {request.path}.")
    return JsonResponse(body, status=404)
