"""The embedded mode's channel layer: Channels' in-memory layer, safe to use from worker threads."""

import asyncio

from channels.layers import InMemoryChannelLayer


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

    async def _on_home(self, coro):
        home, here = self._home, asyncio.get_running_loop()
        if home is None or home is here or home.is_closed() or not home.is_running():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))

    async def receive(self, channel):
        self._remember_loop()
        return await super().receive(channel)

    async def group_add(self, group, channel):
        self._remember_loop()
        return await self._on_home(super().group_add(group, channel))

    async def group_discard(self, group, channel):
        return await self._on_home(super().group_discard(group, channel))

    async def send(self, channel, message):
        return await self._on_home(super().send(channel, message))

    async def group_send(self, group, message):
        return await self._on_home(super().group_send(group, message))
