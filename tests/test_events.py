"""The per-process event publisher survives a failed send."""

import asyncio

from channels.layers import get_channel_layer

from playground.engine import events


def test_publisher_keeps_publishing_after_a_send_is_cancelled(monkeypatch):
    layer = get_channel_layer()
    sent = []
    original = layer.group_send

    async def flaky(group, message):
        if message.get("boom"):
            raise asyncio.CancelledError()  # what a send to a stopped home loop raises
        sent.append((group, message))
        return await original(group, message)

    monkeypatch.setattr(layer, "group_send", flaky)
    publisher = events.publisher()
    publisher.send("g1", {"type": "job.event", "boom": True})
    assert publisher.flush(5)
    publisher.send("g2", {"type": "job.event", "n": 1})
    assert publisher.flush(5)
    assert publisher.thread.is_alive()
    assert sent == [("g2", {"type": "job.event", "n": 1})]
