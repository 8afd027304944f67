"""The private Redis of `make run` and the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tasks.store.local_redis import PrivateRedis


def test_relative_data_dir_as_make_run_gives_it(tmp_path: Path, monkeypatch) -> None:
    """`make run` passes the default data dir `var` relative to the checkout; redis-server
    changes into --dir before it opens --logfile, so a relative path broke the start."""
    monkeypatch.chdir(tmp_path)
    with PrivateRedis(Path("var") / "redis", aof=True) as server:
        client = redis.Redis.from_url(server.url)
        assert client.set("k", "v") and client.get("k") == b"v"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert (tmp_path / "var" / "redis" / "redis.log").is_file()
    assert any((tmp_path / "var" / "redis").glob("appendonly*"))


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path / "first") as first:
        second = PrivateRedis(tmp_path / "second", port=first.port)
        with pytest.raises(RuntimeError, match="(?i)address already in use"):
            second.start()
