"""The signup grant: on signup, or on email verification where verification is mandatory."""

from allauth.account.signals import email_confirmed, user_signed_up
from django.conf import settings
from django.dispatch import receiver

from billing import ledger

SIGNUP_REASON = "signup grant"


def give_signup_grant(user) -> None:
    ledger.grant_once(user, settings.PLAYGROUND_SIGNUP_CREDITS, SIGNUP_REASON)


@receiver(user_signed_up)
def _on_signup(request, user, **kwargs):
    if request is not None:
        from .sudo import note_signup

        note_signup(request, user)
    if settings.ACCOUNT_EMAIL_VERIFICATION != "mandatory":
        give_signup_grant(user)


@receiver(email_confirmed)
def _on_email_confirmed(request, email_address, **kwargs):
    if settings.ACCOUNT_EMAIL_VERIFICATION == "mandatory":
        give_signup_grant(email_address.user)
