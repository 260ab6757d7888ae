"""The embedded mode's channel layer: Channels' in-memory layer, safe to use from worker threads."""

import asyncio
from functools import partial

from channels.layers import InMemoryChannelLayer

# How long a send waits for the receiving loop to take it before running on the sender's loop.
HOP_SECONDS = 2


class EmbeddedChannelLayer(InMemoryChannelLayer):
    """InMemoryChannelLayer whose sends hop onto the loop that receives.

    The in-memory layer's asyncio queues wake their readers only from the readers' own loop;
    an engine thread sending from its own loop would leave a websocket waiting until the server
    loop happened to wake for something else.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._home = None

    def _remember_loop(self):
        loop = asyncio.get_running_loop()
        if self._home is None or self._home.is_closed() or not self._home.is_running():
            self._home = loop

    async def _on_home(self, make):
        """Run `make()` (a coroutine factory) on the receiving loop, or here if that loop is
        gone or does not take it within HOP_SECONDS (a loop left behind, e.g. by a finished
        test, that still reports running): a send must never wait forever."""
        home, here = self._home, asyncio.get_running_loop()
        if home is None or home is here or home.is_closed() or not home.is_running():
            return await make()
        future = asyncio.run_coroutine_threadsafe(make(), home)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), HOP_SECONDS)
        except (TimeoutError, asyncio.CancelledError):
            if asyncio.current_task().cancelling():
                raise  # our own caller was cancelled: not a hop that failed
            future.cancel()
            if self._home is home:
                self._home = None
            return await make()

    async def receive(self, channel):
        self._remember_loop()
        return await super().receive(channel)

    async def group_add(self, group, channel):
        self._remember_loop()
        return await self._on_home(partial(super().group_add, group, channel))

    async def group_discard(self, group, channel):
        return await self._on_home(partial(super().group_discard, group, channel))

    async def send(self, channel, message):
        return await self._on_home(partial(super().send, channel, message))

    async def group_send(self, group, message):
        # Nobody in the group (most jobs: nobody watches them live): nothing to deliver, and
        # no wake-up of the server's loop. A subscriber joining meanwhile loses nothing: it
        # joins, then reads the live state, which the publisher stored before this send.
        if not self.groups.get(group):
            return None
        return await self._on_home(partial(super().group_send, group, message))
