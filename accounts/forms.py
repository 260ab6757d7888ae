"""Forms of the API keys pages."""

import uuid
from datetime import UTC, datetime, time

from django import forms
from django.utils import timezone

from .models import TIERS, ApiKey

TIER_ORDER = [t for t, _ in TIERS]


def _model_choices():
    from playground.catalogue import visible_models

    return [(m.slug, f"{m.name} ({m.slug})") for m in visible_models()]


class KeySettingsForm(forms.Form):
    """The settings a key has: used to create one and to edit one."""

    name = forms.CharField(max_length=100, help_text="Something to tell your keys apart.")
    tier = forms.ChoiceField(help_text="Rate limits for this key; at most your account's tier.")
    expires_on = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional. The key stops working at the start of this day (UTC).",
    )
    spend_cap = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=20,
        decimal_places=6,
        help_text="Optional. Most credits this key may spend.",
    )
    spend_cap_period = forms.ChoiceField(
        required=False,
        choices=[
            ("", "in total"),
            ("daily", "per day"),
            ("weekly", "per week"),
            ("monthly", "per month"),
        ],
        label="Cap resets",
    )
    allowed_models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Optional. Tick models to allow only those; none ticked: all models.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        allowed_tiers = TIER_ORDER[: TIER_ORDER.index(user.tier) + 1]
        self.fields["tier"].choices = [(t, t) for t in allowed_tiers]
        self.fields["tier"].initial = user.tier
        self.fields["allowed_models"].choices = _model_choices()

    def clean_expires_on(self):
        day = self.cleaned_data["expires_on"]
        if day and day <= timezone.now().date():
            raise forms.ValidationError("Pick a day after today.")
        return day

    def key_options(self) -> dict:
        data = self.cleaned_data
        day = data["expires_on"]
        return {
            "tier": data["tier"],
            "expires_at": datetime.combine(day, time.min, tzinfo=UTC) if day else None,
            "spend_cap": data["spend_cap"],
            "spend_cap_period": data["spend_cap_period"] if data["spend_cap"] is not None else "",
            "allowed_models": list(data["allowed_models"]),
        }

    @staticmethod
    def initial_for(key: ApiKey) -> dict:
        return {
            "name": key.name,
            "tier": key.tier,
            "expires_on": key.expires_at.date() if key.expires_at else None,
            "spend_cap": key.spend_cap,
            "spend_cap_period": key.spend_cap_period,
            "allowed_models": key.allowed_models,
        }


class NewKeyForm(KeySettingsForm):
    # One id per rendered form: a resubmitted POST (a reload) must not create a second key.
    form_id = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("initial", {}).setdefault("form_id", uuid.uuid4())
        super().__init__(*args, **kwargs)


class RotateForm(forms.Form):
    grace = forms.ChoiceField(
        choices=[("0", "at once"), ("1h", "after 1 hour"), ("24h", "after 24 hours")],
        label="The old secret stops working",
    )
    # As for new keys: reloading the page that shows the new secret must not rotate again.
    form_id = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("initial", {}).setdefault("form_id", uuid.uuid4())
        super().__init__(*args, **kwargs)
