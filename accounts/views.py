"""The API keys pages, the profile page and account deletion."""

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from billing import ledger
from playground import webhooks

from . import keys as key_rules
from .forms import KeySettingsForm, NewKeyForm, RotateForm
from .models import ApiKey
from .sudo import sudo_required

USED_FORMS = "used_key_forms"


def _ip(request):
    return request.META.get("REMOTE_ADDR")


def _no_store(response):
    # A response that shows a secret must never be cached anywhere.
    response["Cache-Control"] = "no-store"
    return response


def get_key_for_user(request, key_id) -> ApiKey:
    """The user's key, or 404 for an unknown key and for another user's key alike."""
    return get_object_or_404(ApiKey, public_id=key_id, user=request.user)


@login_required
@sudo_required
def keys(request):
    form = NewKeyForm(request.POST or None, user=request.user)
    new_key = None
    if request.method == "POST" and form.is_valid():
        if not _first_use(request, form.cleaned_data["form_id"]):
            messages.info(request, "That key was created already; its secret was shown once.")
            return redirect("keys")
        # The secret is shown in this response only, so it never goes into the session.
        _, new_key = key_rules.create_key(
            request.user, form.cleaned_data["name"], ip=_ip(request), **form.key_options()
        )
        form = NewKeyForm(user=request.user)
    user_keys = list(request.user.api_keys.all())
    spend = ledger.spend_by_key(user_keys)
    for key in user_keys:
        key.spend = ledger.fmt(spend.get(key.pk, 0))
    context = {
        "form": form,
        "keys": user_keys,
        "new_key": new_key,
        "events": request.user.key_events.all()[:20],
    }
    return _no_store(render(request, "accounts/keys.html", context))


@login_required
@sudo_required
def key_detail(request, key_id):
    key = get_key_for_user(request, key_id)
    form = KeySettingsForm(
        request.POST or None, user=request.user, initial=KeySettingsForm.initial_for(key)
    )
    if request.method == "POST" and key.status != "revoked" and form.is_valid():
        key_rules.update(key, ip=_ip(request), name=form.cleaned_data["name"], **form.key_options())
        messages.success(request, "Key settings saved.")
        return redirect("key", key_id=key.public_id)
    return _no_store(render(request, "accounts/key_detail.html", _key_context(key, form)))


def _key_context(key, form, new_secret=None):
    remaining = ledger.key_cap_remaining(key)
    return {
        "key": key,
        "form": form,
        "rotate_form": RotateForm(),
        "new_secret": new_secret,
        "spend": ledger.fmt(ledger.key_spend(key)),
        "cap_remaining": None if remaining is None else ledger.fmt(remaining),
        "events": key.events.all()[:50],
    }


def _first_use(request, form_id) -> bool:
    """True the first time this form id is submitted in this session (reloads repeat it)."""
    used = request.session.get(USED_FORMS, [])
    if str(form_id) in used:
        return False
    request.session[USED_FORMS] = [*used[-19:], str(form_id)]
    return True


@login_required
@sudo_required
def rotate_key(request, key_id):
    key = get_key_for_user(request, key_id)
    if request.method != "POST":
        return redirect("key", key_id=key.public_id)
    form = RotateForm(request.POST)
    if key.status != "active" or not form.is_valid():
        messages.error(request, "Only an active key can be rotated.")
        return redirect("key", key_id=key.public_id)
    if not _first_use(request, form.cleaned_data["form_id"]):
        messages.info(request, "The key was rotated already; its new secret was shown once.")
        return redirect("key", key_id=key.public_id)
    grace = key_rules.GRACE_CHOICES[form.cleaned_data["grace"]]
    secret = key_rules.rotate(key, grace=grace, ip=_ip(request))
    key.refresh_from_db()
    settings_form = KeySettingsForm(user=request.user, initial=KeySettingsForm.initial_for(key))
    context = _key_context(key, settings_form, new_secret=secret)
    return _no_store(render(request, "accounts/key_detail.html", context))


@login_required
@require_POST
def revoke_key(request, key_id):
    key = get_key_for_user(request, key_id)
    key_rules.revoke(key, ip=_ip(request))
    messages.success(request, f"Key “{key.name}” ({key.prefix}…) is revoked.")
    return redirect("keys")


@login_required
def profile(request):
    balance, available = ledger.balances(request.user)
    context = {
        "balance": ledger.fmt(balance),
        "available": ledger.fmt(available),
        "held": ledger.fmt(balance - available),
        "active_keys": sum(key.status == "active" for key in request.user.api_keys.all()),
        "webhook_secret": webhooks.secret_for(request.user),
    }
    return render(request, "accounts/profile.html", context)


@login_required
@sudo_required
def delete_account(request):
    if request.method == "POST":
        if request.POST.get("confirm", "").strip().lower() != request.user.email.lower():
            messages.error(request, "Type your email address to confirm.")
            return redirect("delete-account")
        user = request.user
        logout(request)
        delete_user(user)
        messages.success(request, "Your account, jobs and keys are deleted.")
        return redirect("catalogue")
    return render(request, "accounts/delete.html")


def delete_user(user) -> None:
    """Delete a user with their jobs and keys; their ledger stays, no longer linked to them."""
    from playground.jobs import cancel_job
    from playground.models import Job

    # Running jobs end first, so no hold is left open on the anonymised account.
    for job in Job.objects.filter(user=user, status__in=[Job.PENDING, Job.RUNNING]):
        cancel_job(job)
    user.delete()
