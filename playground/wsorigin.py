"""Websocket origin check: browsers must come from an allowed host; API clients send no Origin."""

from urllib.parse import urlparse

from django.conf import settings
from django.http.request import validate_host


class OriginCheck:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        origin = dict(scope.get("headers") or []).get(b"origin")
        if origin is not None and not _allowed(origin.decode("latin-1")):
            # Refused before accept: the handshake fails with 403.
            await receive()
            await send({"type": "websocket.close", "code": 4403})
            return
        return await self.app(scope, receive, send)


def _allowed(origin: str) -> bool:
    host = urlparse(origin).hostname
    if not host:
        return False
    trusted = {urlparse(o).hostname for o in settings.CSRF_TRUSTED_ORIGINS}
    return host in trusted or validate_host(host, settings.ALLOWED_HOSTS)
