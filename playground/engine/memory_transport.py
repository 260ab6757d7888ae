"""kombu's in-memory transport, but the worker blocks on the queue instead of polling it.

kombu's memory channel polls every `polling_interval` (1 s by default); blocking on the
thread-safe queue starts an embedded job within a millisecond of submit and costs nothing idle.
"""

from kombu.transport import memory

BLOCK_SECONDS = 0.5


class Channel(memory.Channel):
    def _get(self, queue, timeout=None):
        return self._queue_for(queue).get(block=True, timeout=BLOCK_SECONDS)


class Transport(memory.Transport):
    Channel = Channel
