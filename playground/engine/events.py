"""Live job events: the per-process publisher, the live state cache and cancel flags.

Events go to the channel-layer group `job_<request_id>`. Each carries a per-job sequence
number; before publishing, the worker stores the state so far (seq, text, progress) in the
cache, so a websocket that joins late takes that state as its snapshot and forwards only the
events with a higher seq: no token lost, none twice.
"""

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref

from channels.layers import get_channel_layer
from django.core.cache import cache

log = logging.getLogger(__name__)
LIVE_TTL = 3600
# A send that takes longer (a hung Redis, a stuck loop) is dropped: later events must flow.
SEND_SECONDS = 10


def group_name(request_id) -> str:
    return f"job_{request_id}"


def live_key(request_id) -> str:
    return f"pg:live:{request_id}"


def cancel_key(request_id) -> str:
    return f"pg:cancel:{request_id}"


def live_state(request_id) -> dict | None:
    return cache.get(live_key(request_id))


def request_cancel(request_id) -> None:
    cache.set(cancel_key(request_id), True, LIVE_TTL)


def cancel_requested(request_id) -> bool:
    return bool(cache.get(cancel_key(request_id)))


class Publisher:
    """One event-loop thread per process sends every event, in order, on long-lived connections."""

    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue | None = None
        self.pending = 0
        self.idle = threading.Condition()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="events")
        self.thread.start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.loop.call_soon(ready.set)
        self.loop.run_until_complete(self._pump())

    async def _pump(self):
        layer = get_channel_layer()
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            # The newest live state of each job goes to the cache before the batch's events, in
            # one round trip: a late subscriber's snapshot then never misses an event. Blocking
            # here delays only publishing, never the generating thread.
            states = {live_key(rid): state for _, _, (rid, state) in batch if state is not None}
            if states:
                try:
                    cache.set_many(states, LIVE_TTL)
                except Exception:
                    log.exception("could not store live job state")
            for group, message, _ in batch:
                try:
                    await asyncio.wait_for(layer.group_send(group, message), SEND_SECONDS)
                # CancelledError too: a send handed to another loop (the embedded layer's home
                # loop) is cancelled when that loop stops; it must not end this thread, or the
                # process never publishes again.
                except (Exception, asyncio.CancelledError):
                    log.exception("could not publish an event to %s", group)
            with self.idle:
                self.pending -= len(batch)
                if not self.pending:
                    self.idle.notify_all()

    def send(self, group: str, message: dict, live=(None, None)) -> None:
        with self.idle:
            self.pending += 1
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (group, message, live))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event sent so far has been handed to the channel layer."""
        deadline = time.monotonic() + timeout
        with self.idle:
            while self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True


_publisher: Publisher | None = None
_lock = threading.Lock()


def publisher() -> Publisher:
    global _publisher
    # A forked worker child must not reuse its parent's loop thread (it does not exist there).
    if _publisher is None or _publisher.pid != os.getpid():
        with _lock:
            if _publisher is None or _publisher.pid != os.getpid():
                _publisher = Publisher()
    return _publisher


def publish(request_id, payload: dict, seq: int = 0, state: dict | None = None) -> None:
    """Send an event to the job's group; `state` (the live state after it) is cached first."""
    message = {"type": "job.event", "seq": seq, "payload": payload}
    publisher().send(group_name(request_id), message, (request_id, state))


_listening = weakref.WeakSet()


async def keep_listening(layer) -> None:
    """Hold one subscription per server loop for good.

    channels_redis's pub/sub reader sleeps 0.1 s at a time while its process has no
    subscription, so the first websocket after a quiet spell waited up to 100 ms for events.
    """
    loop = asyncio.get_running_loop()
    if loop not in _listening:
        _listening.add(loop)
        await layer.new_channel("listening.")


def user_group(user_id) -> str:
    return f"user_{user_id}"


def publish_user_job(job) -> None:
    """A small job-update event to its owner's group (`/ws/user/`: the dashboard's live list)."""
    payload = {
        "type": "job",
        "request_id": str(job.request_id),
        "model": job.model_slug,
        "status": job.status,
    }
    publisher().send(user_group(job.user_id), {"type": "user.job", "payload": payload})


def publish_result(request_id, document: dict) -> None:
    # seq 2**62: later than anything the worker sent, so a late snapshot never hides the result.
    publish(request_id, {"type": "result", "job": document}, seq=2**62)


def flush(timeout: float = 5.0) -> bool:
    return _publisher.flush(timeout) if _publisher and _publisher.pid == os.getpid() else True


atexit.register(flush, 2.0)


class JobListener:
    """A private channel in a job's group, for code that waits on a job's events.

    `next(timeout)` returns the next message, or None when the timeout passes first; its
    pending receive is kept for the next call, so nothing published meanwhile is lost.
    """

    def __init__(self, request_id):
        self.group = group_name(request_id)
        self.layer = get_channel_layer()
        self.channel = None
        self._receiver = None

    async def __aenter__(self) -> "JobListener":
        await keep_listening(self.layer)
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        return self

    async def next(self, timeout: float) -> dict | None:
        if self._receiver is None:
            self._receiver = asyncio.ensure_future(self.layer.receive(self.channel))
        done, _ = await asyncio.wait({self._receiver}, timeout=max(0.0, timeout))
        if not done:
            return None
        message, self._receiver = self._receiver.result(), None
        return message

    async def __aexit__(self, *exc) -> None:
        await self.layer.group_discard(self.group, self.channel)
        # Channel layers free a channel when a receive on it is cancelled (channels_redis's
        # pub/sub layer unsubscribes then), so end with a cancelled receive, always.
        if self._receiver is None:
            self._receiver = asyncio.ensure_future(self.layer.receive(self.channel))
            await asyncio.sleep(0)
        self._receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._receiver
