"""Kombu's own Redis keys, read by the store: the unacknowledged messages and the queue lists.

A record's Celery message carries the record id as its task id, so a run declared lost can
have its message put back at once (`restore`), and the sweeper can tell which queued records
something will still run (`message_ids`). This is the one module that knows kombu's layout."""

from __future__ import annotations

import json

import redis

from tasks.store.keys import UNACKED, UNACKED_INDEX, queue_lists


class BrokerMessages:
    """Find and restore the broker messages of records."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def _unacked_tag(self, record_id: str) -> str | None:
        """The delivery tag of the record's unacknowledged message, if one is held."""
        for tag, payload in self.r.hscan_iter(UNACKED):
            try:
                message = json.loads(payload)[0]
                if message.get("headers", {}).get("id") == record_id:
                    return str(tag)
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                continue
        return None

    def restore(self, record_id: str) -> bool:
        """Put the record's unacknowledged message (its task id is the record id) back at the
        head of its queue, as kombu does after the visibility timeout, but now; False when no
        such message is held (then the caller sends a new one)."""
        found = self._unacked_tag(record_id)
        if found is None:
            return False
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(UNACKED)
                payload = pipe.hget(UNACKED, found)
                if payload is None:  # restored or acknowledged meanwhile
                    pipe.unwatch()
                    return True
                message, _exchange, routing_key = json.loads(payload)
                message.setdefault("headers", {})["redelivered"] = True
                message.get("properties", {}).get("delivery_info", {})["redelivered"] = True
                queue = routing_key or message.get("properties", {}).get("delivery_info", {}).get(
                    "routing_key"
                )
                pipe.multi()
                pipe.rpush(queue, json.dumps(message))  # consumers BRPOP: the head of the queue
                pipe.hdel(UNACKED, found)
                pipe.zrem(UNACKED_INDEX, found)
                pipe.execute()
                return True
            except redis.WatchError:
                return True  # someone else moved it

    def message_ids(self, queues: tuple[str, ...] | list[str]) -> set[str]:
        """The task ids (record ids) of the messages waiting in `queues` (every priority list
        of each) or delivered and not yet acknowledged: the records something will still run.
        Cost: the messages held; the sweeper (tasks.reaper) reads it seldom."""
        pipe = self.r.pipeline(transaction=False)
        for q in queues:
            for key in queue_lists(q):
                pipe.lrange(key, 0, -1)
        pipe.hvals(UNACKED)
        *lists, unacked = pipe.execute()
        ids: set[str] = set()
        for payload in [m for messages in lists for m in messages]:
            try:
                ids.add(json.loads(payload)["headers"]["id"])
            except (ValueError, KeyError, TypeError):
                continue
        for payload in unacked:
            try:
                ids.add(json.loads(payload)[0]["headers"]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                continue
        return ids
