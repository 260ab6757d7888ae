"""The model pages: catalogue, model page (form, live preview, run), chat, compare, API docs."""

import json
from decimal import Decimal

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from billing import ledger

from . import apidocs, catalogue, jobs, media, pricing, snippets
from .engine import registry
from .errors import ApiError, error_body
from .forms import field_errors, form_fields, parse_form
from .models import MODALITIES
from .schemas import json_schema

PRICE_FILTERS = {
    "free": Decimal(0),
    "0.01": Decimal("0.01"),
    "0.1": Decimal("0.1"),
    "1": Decimal(1),
}


def home(request):
    if request.user.is_authenticated:
        from .jobviews import dashboard

        return dashboard(request)
    return redirect("catalogue")


def catalogue_page(request):
    query = request.GET.get("q", "").strip()
    modality = request.GET.get("modality", "")
    max_price = PRICE_FILTERS.get(request.GET.get("price", ""))
    models = catalogue.visible_models()
    if query:
        from django.db.models import Q

        models = models.filter(
            Q(name__icontains=query) | Q(slug__icontains=query) | Q(description__icontains=query)
        )
    if modality:
        models = models.filter(modality=modality)
    times = catalogue.run_times()
    cards = []
    for model in models:
        price, unit = pricing.headline(model)
        if max_price is not None and price > max_price:
            continue
        cards.append(
            {
                "model": model,
                "price": ledger.fmt(price),
                "unit": unit,
                "run_time": times.get(model.pk),
            }
        )
    context = {
        "cards": cards,
        "query": query,
        "modality": modality,
        "price": request.GET.get("price", ""),
        "modalities": [m for m, _ in MODALITIES],
        "filtered": bool(query or modality or max_price is not None),
    }
    partial = request.htmx and not request.htmx.history_restore_request
    template = "playground/catalogue.html#cards" if partial else "playground/catalogue.html"
    return render(request, template, context)


def _model_or_404(slug):
    model = catalogue.get_model(slug)
    if model is None:
        raise Http404("No such model")
    return model


def base_url(request) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _preview_context(request, model, values: dict) -> dict:
    """The live parts of the model page: estimate, inline errors, code for these values."""
    schema = json_schema(model)
    params, errors, general = field_errors(model, values)
    estimate = None
    if params is not None:
        tokens = registry.prompt_tokens_bound(model, params)
        estimate = ledger.fmt(pricing.worst_case(model, params, tokens))
    shown = snippets.changed_params(schema, params if params is not None else values)
    return {
        "model": model,
        "estimate": estimate,
        "errors": errors,
        "general_error": general,
        "field_names": list(schema.get("properties", {})),
        "snippets": snippets.all_snippets(model, shown, base_url(request)),
    }


def _rerun_values(request) -> dict | None:
    """The params of the user's job named by ?rerun=, to prefill the form (404 if not theirs)."""
    request_id = request.GET.get("rerun")
    if not request_id or not request.user.is_authenticated:
        return None
    try:
        return jobs.get_job_for_user(request.user, request_id).params
    except ApiError:
        raise Http404("No such job") from None


def model_page(request, slug, values=None, error=None, status=200):
    model = _model_or_404(slug)
    schema = json_schema(model)
    if values is None:
        values = _rerun_values(request)
    start = values if values is not None else _example_values(model)
    context = {
        "model": model,
        "fields": form_fields(schema, start),
        "pricing": pricing.pricing_document(model),
        "error": error,
        "tab": "playground",
        **_preview_context(request, model, start),
    }
    return render(request, "playground/model.html", context, status=status)


def _example_values(model) -> dict:
    """What a fresh form starts with: the schema's defaults plus an example input to run."""
    example = apidocs.example_params(model)
    values = {k: v for k, v in example.items() if k in ("prompt", "input")}
    if isinstance(values.get("input"), list):
        values["input"] = values["input"][0]
    return values


@require_POST
def preview(request, slug):
    """htmx: cost estimate, inline validation and code snippets for the form as it is now."""
    model = _model_or_404(slug)
    values = parse_form(json_schema(model), request.POST)
    context = _preview_context(request, model, values)
    return render(request, "playground/model.html#preview", context)


@login_required
@require_POST
def run_model(request, slug):
    model = _model_or_404(slug)
    values = parse_form(json_schema(model), request.POST)
    try:
        params = jobs.validate_params(model, values, user=request.user)
        job = jobs.submit_job(request.user, model, params)
    except ApiError as exc:
        if request.htmx:
            return render(request, "playground/model.html#run-error", {"error": exc})
        return model_page(request, slug, values=values, error=exc, status=exc.status)
    if not request.htmx:
        return redirect("job", request_id=job.request_id)
    doc = jobs.status_document(job, media.base_url(request))
    return render(request, "playground/_job_panel.html", {"job": job, "doc": doc})


def chat_page(request, slug):
    model = _model_or_404(slug)
    if model.modality != "text":
        raise Http404("Chat is for text models")
    schema = json_schema(model)
    fields = [f for f in form_fields(schema) if f["name"] in ("max_tokens", "temperature", "top_p")]
    context = {
        "model": model,
        "fields": fields,
        "tab": "chat",
        "pricing": pricing.pricing_document(model),
    }
    return render(request, "playground/chat.html", context)


@login_required
@require_POST
def chat_send(request, slug):
    """JSON for the chat view's script: submits one turn, answers {request_id} or {error}."""
    model = _model_or_404(slug)
    try:
        data = json.loads(request.body or b"{}")
        if not isinstance(data, dict):
            raise ValueError
    except ValueError:
        return JsonResponse(error_body(400, "invalid_json", "Send a JSON object."), status=400)
    allowed = {"messages", "max_tokens", "temperature", "top_p", "seed"}
    try:
        if model.modality != "text":
            raise ApiError(400, "wrong_modality", "Chat is for text models.", "model")
        params = jobs.validate_params(
            model, {k: v for k, v in data.items() if k in allowed}, user=request.user
        )
        job = jobs.submit_job(request.user, model, params)
    except ApiError as exc:
        return JsonResponse(exc.body(), status=exc.status)
    return JsonResponse({"request_id": str(job.request_id), "status": job.status})


def compare_page(request):
    """Same input, two or three models of one modality, side by side."""
    modality = request.GET.get("modality") or "text"
    choices = list(catalogue.visible_models().filter(modality=modality))
    picked = [m for m in request.GET.getlist("models") if any(c.slug == m for c in choices)]
    if not picked:
        picked = [c.slug for c in choices[:3]]
    first = next((c for c in choices if c.slug == picked[0]), None) if picked else None
    fields = []
    if first is not None:
        fields = [
            f
            for f in form_fields(json_schema(first), _example_values(first))
            if not f["advanced"] and f["widget"] != "json"
        ]
    context = {
        "modality": modality,
        "modalities": [m for m, _ in MODALITIES],
        "choices": choices,
        "picked": picked,
        "fields": fields,
    }
    return render(request, "playground/compare.html", context)


@login_required
@require_POST
def compare_run(request):
    """htmx: one job per picked model (at most three), each in its own live panel."""
    slugs = list(dict.fromkeys(request.POST.getlist("models")))[:3]
    columns = []
    for slug in slugs:
        model = catalogue.get_model(slug)
        if model is None:
            columns.append({"slug": slug, "error": "No such model."})
            continue
        values = parse_form(json_schema(model), request.POST)
        try:
            job = jobs.submit_job(
                request.user, model, jobs.validate_params(model, values, user=request.user)
            )
        except ApiError as exc:
            columns.append({"slug": slug, "error": exc.message})
            continue
        doc = jobs.status_document(job, media.base_url(request))
        columns.append({"slug": slug, "job": job, "doc": doc})
    if not columns:
        columns.append({"slug": "", "error": "Pick at least one model."})
    return render(request, "playground/compare.html#columns", {"columns": columns})


def docs_page(request, slug):
    model = _model_or_404(slug)
    context = {
        "model": model,
        "tab": "docs",
        "base_url": base_url(request),
        **apidocs.docs_context(model, base_url(request), request.user),
    }
    return render(request, "playground/docs.html", context)


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
