from decimal import Decimal

from django import forms

from . import ledger


class RedeemForm(forms.Form):
    code = forms.CharField(max_length=64, label="Redeem a code")


class ThresholdForm(forms.Form):
    threshold = forms.CharField(
        required=False,
        max_length=30,
        label="Email me when my available credits fall below",
        help_text="Leave empty to switch the email off.",
    )

    def clean_threshold(self) -> Decimal | None:
        value = self.cleaned_data["threshold"].strip()
        if not value:
            return None
        try:
            return ledger.parse_amount(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc).capitalize() + ".") from None


class GrantForm(forms.Form):
    """The admin's grant / adjustment form on a credit account."""

    KINDS = [("grant", "grant (add credits)"), ("adjustment", "adjustment (either sign)")]
    kind = forms.ChoiceField(choices=KINDS)
    amount = forms.DecimalField(
        max_digits=20, decimal_places=6, help_text="An adjustment may be negative."
    )
    reason = forms.CharField(max_length=150)

    def clean(self):
        data = super().clean()
        amount = data.get("amount")
        if amount is not None:
            if amount == 0:
                self.add_error("amount", "Give an amount other than zero.")
            elif data.get("kind") == "grant" and amount < 0:
                self.add_error("amount", "A grant adds credits; use an adjustment to remove.")
        return data


class BatchForm(forms.Form):
    """The admin's "create a batch of redeem codes" form."""

    count = forms.IntegerField(min_value=1, max_value=10_000, initial=10)
    amount = forms.DecimalField(max_digits=20, decimal_places=6, min_value=Decimal("0.000001"))
    max_uses = forms.IntegerField(
        min_value=1, initial=1, help_text="How many different accounts may redeem each code."
    )
    expires_at = forms.DateTimeField(
        required=False,
        help_text="UTC, e.g. 2027-01-31 23:59. Empty: never.",
        widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM"}),
    )
    batch = forms.CharField(max_length=100, required=False, help_text="A label, e.g. 'meetup-nov'")
