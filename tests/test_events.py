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


async def test_embedded_layer_does_not_wait_forever_on_a_stuck_loop(monkeypatch):
    """A receiving loop that reports running but takes nothing (left behind, or blocked)."""
    import threading
    import time

    from playground import layers

    monkeypatch.setattr(layers, "HOP_SECONDS", 0.2)
    layer = layers.EmbeddedChannelLayer()
    stuck = asyncio.new_event_loop()
    thread = threading.Thread(target=stuck.run_forever, daemon=True)
    thread.start()
    stuck.call_soon_threadsafe(time.sleep, 3)  # blocks that loop while the test runs
    try:
        while not stuck.is_running():
            await asyncio.sleep(0.01)
        layer._home = stuck
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "x.y", "n": 1})
        message = await asyncio.wait_for(layer.receive(channel), 2)
        assert message == {"type": "x.y", "n": 1}
    finally:
        stuck.call_soon_threadsafe(stuck.stop)
        thread.join(5)
