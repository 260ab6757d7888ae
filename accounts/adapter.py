from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context

from .sudo import recently_authenticated


class AccountAdapter(DefaultAccountAdapter):
    def is_reauthentication_required(self, *, app: str, **kwargs) -> bool:
        """allauth's sensitive pages (2FA setup) honour our sudo window: fresh logins count."""
        request = context.request
        if request is not None and recently_authenticated(request):
            return False
        return super().is_reauthentication_required(app=app, **kwargs)
