from django.urls import path, re_path

from .consumers import JobConsumer, NotFoundConsumer, UserConsumer

websocket_urlpatterns = [
    # A str, not <uuid:>: a malformed id must close 4404 (after the credentials check),
    # not fail the handshake for want of a route.
    path("ws/jobs/<str:request_id>/", JobConsumer.as_asgi()),
    path("ws/user/", UserConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
