"""Live job status over websockets (CONTRACT.md §7)."""

import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import jobs, media, ratelimit
from .auth import key_from_header
from .engine import events
from .errors import ApiError

MEDIA_KEYS = ("images", "video", "audio_url")


@database_sync_to_async
def _user_from_scope(scope):
    """The Bearer key's user, else the session user; None when neither authenticates.

    A key that is sent but unusable (invalid, revoked, expired) is refused outright; a key whose
    spend cap is used up may still watch its jobs.
    """
    headers = dict(scope.get("headers") or [])
    raw = headers.get(b"authorization")
    ip = (scope.get("client") or [None])[0]
    try:
        key = key_from_header(raw.decode("latin-1") if raw is not None else None, ip)
    except ApiError:
        return None
    if key is not None:
        try:
            ratelimit.hit(key, "read")
        except ApiError:
            return "rate_limited"
        return key.user
    user = scope.get("user")
    return user if user is not None and user.is_authenticated else None


@database_sync_to_async
def _snapshot(user, request_id, base=None):
    """(document, terminal, seq) for the user's job; ApiError 404 when not theirs."""
    job = jobs.get_job_for_user(user, request_id)
    live = events.live_state(job.request_id) if job.status == job.RUNNING else None
    return jobs.status_document(job, base), job.is_terminal, (live or {}).get("seq", 0)


class JobConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.accept()
        self.group = None
        self.seq = None  # no events are forwarded before the snapshot
        user = await _user_from_scope(self.scope)
        if user is None or user == "rate_limited":
            await self.close(code=4401 if user is None else 4429)
            return
        try:
            request_id = str(uuid.UUID(self.scope["url_route"]["kwargs"]["request_id"]))
        except ValueError:
            await self.close(code=4404)
            return
        self.group = events.group_name(request_id)
        await events.keep_listening(self.channel_layer)
        # Join before reading the snapshot: nothing published in between is lost.
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.user, self.request_id = user, request_id
        self.base = media.base_url_from_scope(self.scope)
        try:
            document, terminal, seq = await _snapshot(user, request_id, self.base)
        except ApiError:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
            await self.close(code=4404)
            return
        self.seq = seq
        await self.send_json({"type": "snapshot", "job": document})
        if terminal:
            await self.close(code=1000)

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_event(self, event):
        # seq is None until the snapshot went out, and again once closed 4404 (not this user's).
        if self.seq is None or event["seq"] <= self.seq:
            return
        self.seq = event["seq"]
        payload = event["payload"]
        if payload["type"] == "result" and any(k in payload["job"] for k in MEDIA_KEYS):
            # The worker made its links without knowing our host; make them for this client.
            try:
                document, _, _ = await _snapshot(self.user, self.request_id, self.base)
                payload = {**payload, "job": document}
            except ApiError:
                pass  # gone meanwhile (account deleted): the worker's document will do
        await self.send_json(payload)
        if event["payload"]["type"] == "result":
            await self.close(code=1000)


class NotFoundConsumer(AsyncJsonWebsocketConsumer):
    """Any other /ws/ path: accepted, then closed 4404, like a job that is not found."""

    async def connect(self):
        await self.accept()
        await self.close(code=4404)


class UserConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/user/`: the signed-in user's job updates (group `user_<id>`), for the dashboard."""

    async def connect(self):
        await self.accept()
        self.group = None
        user = await _user_from_scope(self.scope)
        if user is None or user == "rate_limited":
            await self.close(code=4401 if user is None else 4429)
            return
        self.group = events.user_group(user.pk)
        await events.keep_listening(self.channel_layer)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json({"type": "ready"})

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def user_job(self, event):
        await self.send_json(event["payload"])
