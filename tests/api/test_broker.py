"""The gateway's broker transport (service.broker): kombu's Redis transport publishing through
one Redis client per channel, its messages where a worker's kombu reads them."""

from __future__ import annotations

import json
from unittest.mock import patch

import redis
from kombu.transport import redis as kombu_redis

from service.main import gateway_celery
from tasks.settings import Settings


def test_one_publishing_client_per_channel(settings: Settings) -> None:
    celery = gateway_celery(settings)
    made: list[bool] = []
    build = kombu_redis.Channel._create_client

    def counted(channel, asynchronous=False):
        made.append(asynchronous)
        return build(channel, asynchronous)

    with patch.object(kombu_redis.Channel, "_create_client", counted):
        for i in range(10):
            celery.send_task(
                "sharpness.run_job",
                args=[f"{i:032x}"],
                task_id=f"{i:032x}",
                queue="cpu",
                ignore_result=True,
            )
    # kombu's own channel builds one per message and one per task-sent event: 20 here
    assert len(made) <= 2, made
    r = redis.Redis.from_url(settings.redis_url)
    messages = [json.loads(m) for m in r.lrange("cpu", 0, -1)]
    assert len(messages) == 10
    assert {m["headers"]["id"] for m in messages} == {f"{i:032x}" for i in range(10)}
    assert all(m["headers"]["task"] == "sharpness.run_job" for m in messages)
