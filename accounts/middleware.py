"""allauth's session tracking, written at most once a minute per session."""

from allauth.usersessions import app_settings
from allauth.usersessions.models import UserSession
from django.core.cache import cache

# allauth's own middleware saves the UserSession row on every request: a write and a commit on
# each page view (~16 ms of the model page's ~30 on SQLite). "Last seen" a minute stale is fine.
TOUCH_SECONDS = 60


class UserSessionsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        key = getattr(getattr(request, "session", None), "session_key", None)
        if (
            app_settings.TRACK_ACTIVITY
            and key
            and request.user.is_authenticated
            # cache.add is atomic: of concurrent requests, only one writes.
            and cache.add(f"usersession-seen:{key}", 1, TOUCH_SECONDS)
        ):
            UserSession.objects.create_from_request(request)
        return self.get_response(request)
