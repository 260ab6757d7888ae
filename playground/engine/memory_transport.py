"""kombu's in-memory transport, but an idle worker sleeps until a message arrives.

kombu's memory channel polls its queues every `polling_interval` (1 s by default). Here a
put wakes every waiting getter at once, so an embedded job starts within a millisecond of
submit and an idle worker costs nothing. The worker cycles over several queues (its own and
the remote-control one), so it waits for a put to *any* queue, not on one queue alone.
"""

import threading
from queue import Empty

from kombu.transport import memory

# Short: a put always wakes the worker at once; this only bounds a wait nobody signals (the
# worker also waits here while its prefetch limit keeps it from taking the next message).
BLOCK_SECONDS = 0.05
_arrived = threading.Condition()
_puts = 0


def _notify():
    global _puts
    with _arrived:
        _puts += 1
        _arrived.notify_all()


class Channel(memory.Channel):
    def _get(self, queue, timeout=None):
        with _arrived:
            seen = _puts
        try:
            return self._queue_for(queue).get(block=False)
        except Empty:
            pass
        # Another queue of this worker has work: return at once so the cycle moves on to it.
        if any(self._queue_for(q).qsize() for q in self._active_queues):
            raise Empty()
        with _arrived:
            # Counting puts closes the gap between the failed get and the wait.
            if _puts == seen:
                _arrived.wait(BLOCK_SECONDS)
        return self._queue_for(queue).get(block=False)

    def _put(self, queue, message, **kwargs):
        super()._put(queue, message, **kwargs)
        _notify()

    def _put_fanout(self, exchange, message, routing_key=None, **kwargs):
        super()._put_fanout(exchange, message, routing_key, **kwargs)
        _notify()


class Transport(memory.Transport):
    Channel = Channel
