"""Sudo mode: security-sensitive POSTs need a password entered within the last few minutes."""

import time
from functools import wraps

from allauth.account.internal.flows.login import (
    AUTHENTICATION_METHODS_SESSION_KEY,
    record_authentication,
)
from allauth.account.internal.flows.reauthentication import did_recently_reauthenticate
from allauth.core.exceptions import ReauthenticationRequired
from django.conf import settings


def recently_authenticated(request) -> bool:
    """A login, signup or re-authentication of this session within the sudo window."""
    if not request.user.is_authenticated:
        return False
    records = request.session.get(AUTHENTICATION_METHODS_SESSION_KEY) or []
    window = settings.ACCOUNT_REAUTHENTICATION_TIMEOUT
    # Unlike allauth's own check, a fresh login counts (as on GitHub): no second password prompt
    # right after typing one.
    fresh = any(time.time() - r.get("at", 0) < window for r in records)
    return fresh or did_recently_reauthenticate(request)


def sudo_required(view):
    """GETs pass; other methods need a recent authentication, else allauth's reauthenticate page."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD") and not recently_authenticated(request):
            raise ReauthenticationRequired()
        return view(request, *args, **kwargs)

    return wrapper


def note_signup(request, user) -> None:
    record_authentication(request, user, method="password", signup=True)
