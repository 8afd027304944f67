"""The gateway's broker transport: kombu's Redis transport, publishing through one Redis
client per channel.

kombu's Redis channel builds a new `redis.Redis` for every message it publishes (the client
object, not the connection: both come from the channel's pool). The constructor copies
redis-py's table of reply callbacks, so a submit, which publishes the task and its
`task-sent` event, spent about a sixth of its CPU building two clients. Here each channel
keeps the one it built, for as long as that channel's connection pool lives (kombu drops the
pool when it closes the channel after a connection error, and the next publish builds a new
client on the new pool). The consuming side (BRPOP, the asynchronous client) is untouched,
and so is every message byte: workers run kombu's own transport and read these messages.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _publishing_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._publishing_client
        if client is None or client.connection_pool is not self.pool:
            client = self._publishing_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
