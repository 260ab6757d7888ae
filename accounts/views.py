"""The API keys page."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from . import keys as key_rules
from .models import ApiKey


class NewKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="Something to tell your keys apart, e.g. 'laptop'."
    )


@login_required
def keys(request):
    form = NewKeyForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        _, new_key = key_rules.create_key(request.user, form.cleaned_data["name"])
        form = NewKeyForm()
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
