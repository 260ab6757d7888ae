"""The signup grant: on signup, or on email verification where verification is mandatory."""

from allauth.account.signals import email_confirmed, user_signed_up
from django.conf import settings
from django.dispatch import receiver

from billing import ledger

from .models import User

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
    else:
        User.objects.filter(pk=user.pk).update(signup_grant_pending=True)


@receiver(email_confirmed)
def _on_email_confirmed(request, email_address, **kwargs):
    # Only a web signup's pending grant: operators' users and later email changes get nothing.
    user = email_address.user
    if User.objects.filter(pk=user.pk, signup_grant_pending=True).update(
        signup_grant_pending=False
    ):
        give_signup_grant(user)
