"""The API keys page."""

import uuid

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from . import keys as key_rules
from .models import ApiKey

USED_FORMS = "used_key_forms"


class NewKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Something to tell your keys apart.")
    # One id per rendered form: a resubmitted POST (a reload) must not create a second key.
    form_id = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


@login_required
def keys(request):
    form = NewKeyForm(request.POST or None, initial={"form_id": uuid.uuid4()})
    new_key = None
    if request.method == "POST" and form.is_valid():
        used = request.session.get(USED_FORMS, [])
        form_id = str(form.cleaned_data["form_id"])
        if form_id in used:
            messages.info(request, "That key was created already; its secret was shown once.")
            return redirect("keys")
        # The secret is shown in this response only, so it never goes into the session.
        _, new_key = key_rules.create_key(request.user, form.cleaned_data["name"])
        request.session[USED_FORMS] = [*used[-19:], form_id]
        form = NewKeyForm(initial={"form_id": uuid.uuid4()})
    response = render(
        request,
        "accounts/keys.html",
        {"form": form, "keys": request.user.api_keys.all(), "new_key": new_key},
    )
    # The one response that shows a secret must never be cached anywhere.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def revoke_key(request, key_id):
    key = get_object_or_404(ApiKey, public_id=key_id, user=request.user)
    key_rules.revoke(key)
    messages.success(request, f"Key “{key.name}” ({key.prefix}…) is revoked.")
    return redirect("keys")
