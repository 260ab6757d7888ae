"""ASGI entry point: HTTP and websockets in one daphne process (plus, embedded, the engine)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from playground.celery import app as celery_app  # noqa: E402, F401
from playground.middleware import ApiHandler  # noqa: E402
from playground.routing import websocket_urlpatterns  # noqa: E402
from playground.wsorigin import OriginCheck  # noqa: E402

api_asgi_app = ApiHandler()


async def http_app(scope, receive, send):
    """/v1 skips the pages' middleware (sessions, CSRF, allauth, static files)."""
    path = scope["path"]
    app = api_asgi_app if path.startswith("/v1/") or path == "/healthz" else django_asgi_app
    await app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": OriginCheck(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

if settings.PLAYGROUND_EMBEDDED_WORKER:
    from playground.engine import embedded  # noqa: E402

    embedded.start()
