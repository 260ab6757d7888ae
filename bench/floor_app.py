"""The floor for bench/proxy.py: the least a Django view on daphne can do to proxy a chat
completion. No database, no key, no job, no billing, no events: one sync view (Django runs it
on a thread, as our jobs run) that posts the client's body to the upstream on one pooled
httpx client and returns the upstream's JSON.

    FLOOR_UPSTREAM=http://127.0.0.1:PORT/v1 python -m daphne -p PORT bench.floor_app:application

What a completion through Playground costs beyond this is what jobs, billing, limits and events
cost; this floor itself is what the decided stack (Django, daphne, httpx) costs.
"""

import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="bench-floor",
    MIDDLEWARE=[],
)
django.setup()

import httpx  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

UPSTREAM = os.environ["FLOOR_UPSTREAM"].rstrip("/")
client = httpx.Client(
    timeout=60, limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
)


def chat_completions(request):
    upstream = client.post(
        UPSTREAM + "/chat/completions",
        content=request.body,
        headers={"Content-Type": "application/json"},
    )
    return HttpResponse(
        upstream.content, status=upstream.status_code, content_type="application/json"
    )


urlpatterns = [path("v1/chat/completions", chat_completions)]
application = get_asgi_application()
