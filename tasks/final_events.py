"""A task's final event again after a Redis outage, for event consumers that reconnect late.

Why: Flower builds its task list from task events, published on Redis pub/sub: a message
published while nobody is subscribed is gone. After a Redis outage Flower reconnects on its
own schedule (its tries come further apart the longer Redis is away: up to about the
outage's length after Redis is back), while a worker publishes at once what it could not
send meanwhile. A
task that ended during the outage, or just after it, would keep its STARTED in Flower's task
list, though the result backend is right.

How: every task-succeeded, task-failed and task-revoked a process sends (and each
task-received and task-started) goes through `Dispatcher`, the app's event dispatcher
(`make_celery`), which keeps it (the last `KEEP_EVENTS`, for `KEEP_S`) where `watch` runs:
the worker's main process (Celery's own events, the reaper's, a hard time limit's) and its
pool child (task-revoked). `watch`'s thread asks Redis every `PROBE_S` on a connection of its
own that never retries in silence: a failed probe means the connection was lost. When Redis
answers again, the final events sent from the last good probe on (during the outage, and
after it for as long as consumers may take to come back: the outage's length plus `GRACE_S`)
go again, with the task's received and started events before them (its name, args), as sent
(their worker name, their fields), `RESEND_AFTER_S` after Redis came back while an offset
is within twice the outage plus `GRACE_S`: one copy at least comes after Flower's reconnect.

A copy is harmless: Flower's state takes the same final state from the same worker again
(a received or started never overrides a final state, and SUCCESS ranks first anyway); only
its event counters and the task's end time (that of the copy) move.

Torch-free (the gateway's app uses the dispatcher too; it keeps nothing unless it watches).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from celery.app.events import Events as _Events
from celery.events.dispatcher import EventDispatcher

log = logging.getLogger("tasks.final_events")

FINAL = frozenset({"task-succeeded", "task-failed", "task-revoked"})
KEPT = FINAL | {"task-received", "task-started"}
KEEP_EVENTS = 512  # the final events a process keeps, newest
KEEP_S = 15 * 60.0  # and for how long, outside an outage's window
PROBE_S = 1.0  # how often `watch` asks Redis
GRACE_S = 10.0  # how much longer than the outage a consumer may take to reconnect
RESEND_AFTER_S = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
# send()'s own options, not the event's (a copy is stamped when it is sent)
_NOT_FIELDS = frozenset({"timestamp", "retry", "retry_policy", "blind", "utcoffset", "Event"})


@dataclass
class Sent:
    at: float  # time.monotonic() when it was sent
    kind: str
    hostname: str
    fields: dict[str, Any]


@dataclass
class Gap:
    """Redis was away from `start` (the last good probe) to `back`; the final events sent
    from `start` to `until` go again at `due` (monotonic times, earliest first)."""

    start: float
    back: float
    until: float
    due: list[float] = field(default_factory=list)


def resend_times(start: float, back: float) -> list[float]:
    outage = back - start
    return [back + o for o in RESEND_AFTER_S if o <= 2 * outage + GRACE_S] or [back + 2.0]


class Watch(threading.Thread):
    """One process's final events and its Redis probe (see the module's docstring)."""

    def __init__(self, app: Any) -> None:
        super().__init__(name="final-events", daemon=True)
        self.app = app
        self.pid = os.getpid()
        self.sent: deque[Sent] = deque(maxlen=KEEP_EVENTS)
        self.gaps: list[Gap] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def keep(self, kind: str, hostname: str, fields: dict[str, Any]) -> None:
        fields = {k: v for k, v in fields.items() if k not in _NOT_FIELDS}
        with self.lock:
            self.sent.append(Sent(time.monotonic(), kind, hostname, fields))

    def _probe(self, client: Any) -> bool:
        try:
            client.ping()
            return True
        except Exception:
            client.connection_pool.disconnect()
            return False

    def run(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            self.app.conf.broker_url,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),  # a lost connection shows as a failed probe
        )
        last_ok = time.monotonic() if self._probe(client) else None
        down = last_ok is None
        while not self.stopped.wait(PROBE_S):
            now = time.monotonic()
            if not self._probe(client):
                down = True
                continue
            if down and last_ok is not None:
                back = time.monotonic()
                gap = Gap(last_ok, back, back + (back - last_ok) + GRACE_S)
                gap.due = resend_times(last_ok, back)
                with self.lock:
                    self.gaps.append(gap)
                log.info(
                    "Redis is back after %.0f s: final events of the outage go again",
                    back - last_ok,
                )
            down = False
            last_ok = now
            self._resend_due(time.monotonic())

    def _resend_due(self, now: float) -> None:
        with self.lock:
            todo: dict[int, Sent] = {}
            for gap in self.gaps:
                if gap.due and gap.due[0] <= now:
                    while gap.due and gap.due[0] <= now:
                        gap.due.pop(0)
                    for s in self.sent:
                        if s.kind in FINAL and gap.start - PROBE_S <= s.at <= min(gap.until, now):
                            todo[id(s)] = s
            # and the task's own received and started (its name, args), before its end
            ended = {s.fields.get("uuid") for s in todo.values()}
            for s in self.sent:
                if s.kind not in FINAL and s.fields.get("uuid") in ended:
                    todo[id(s)] = s
            self.gaps = [g for g in self.gaps if g.due]
            oldest = min([g.start - PROBE_S for g in self.gaps], default=now) - KEEP_S
            while self.sent and self.sent[0].at < min(oldest, now - KEEP_S):
                self.sent.popleft()
        for s in sorted(todo.values(), key=lambda s: s.at):
            self._send(s)

    def _send(self, s: Sent) -> None:
        try:
            with self.app.connection_for_write() as conn:
                d = EventDispatcher(
                    conn, hostname=s.hostname, app=self.app, buffer_while_offline=False
                )
                try:
                    d.send(s.kind, retry=True, retry_policy={"max_retries": 2}, **s.fields)
                finally:
                    d.close()
        except Exception:
            log.warning("could not send %s of task %s again", s.kind, s.fields.get("uuid"))


_watch: Watch | None = None
_start = threading.Lock()


def watch(app: Any) -> Watch:
    """Keep this process's final events and send them again after a Redis outage (once per
    process: a forked child calls it again for its own)."""
    global _watch
    with _start:
        if _watch is None or _watch.pid != os.getpid():
            _watch = Watch(app)
            _watch.start()
        return _watch


class Dispatcher(EventDispatcher):
    """The app's event dispatcher: sends as Celery's does, and keeps each final task event
    (and each task-received and task-started) where `watch` runs."""

    def send(self, type: str, *args: Any, **fields: Any) -> Any:  # noqa: A002 (Celery's name)
        result = super().send(type, *args, **fields)
        w = _watch
        if type in KEPT and self.enabled and w is not None and w.pid == os.getpid():
            w.keep(type, self.hostname, fields)
        return result


class Events(_Events):
    """`app.events` whose dispatchers keep final events (`make_celery`)."""

    dispatcher_cls = "tasks.final_events:Dispatcher"
