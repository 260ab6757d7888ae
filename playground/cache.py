"""The services mode's cache: Django's Redis cache, with one client object per connection pool.

Django's client builds a new `redis.Redis` for every operation (its constructor copies the
whole table of response callbacks); the events and cancel checks of each job made that cost
show up beside the SQL. A `redis.Redis` is safe to share between threads: it takes a pooled
connection per command.
"""

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class SharedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
