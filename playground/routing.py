from django.urls import path

from .consumers import JobConsumer, UserConsumer

websocket_urlpatterns = [
    path("ws/jobs/<uuid:request_id>/", JobConsumer.as_asgi()),
    path("ws/user/", UserConsumer.as_asgi()),
]
