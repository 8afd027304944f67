"""tasks.final_events: which task events go again after a Redis outage, and that a copy of a
task's final event leaves Flower's state as it was (no Redis: Flower's state is fed directly;
tests/integration/test_flower.py runs it against a real Flower and a Redis restart)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery.events import Event
from flower.events import EventsState

from tasks import final_events as fe
from tasks.app import make_celery
from tasks.settings import Settings


class Kept(fe.Watch):
    """A Watch whose sends are listed, not published, and whose thread never starts."""

    def __init__(self) -> None:
        super().__init__(make_celery(Settings(redis_url="redis://127.0.0.1:1/0")))
        self.copies: list[tuple[str, str, str]] = []

    def _send(self, s: fe.Sent) -> None:
        self.copies.append((s.kind, s.hostname, s.fields["uuid"]))

    def at(self, t: float, kind: str, task: str, host: str = "w@h", **fields: Any) -> None:
        self.sent.append(fe.Sent(t, kind, host, {"uuid": task, **fields}))


def test_the_final_events_of_an_outage_go_again_on_a_backoff() -> None:
    w = Kept()
    now = time.monotonic()
    start, back = now - 100, now - 93  # a 7 s outage, back 93 s ago
    w.at(start - 30, "task-received", "done")
    w.at(start - 29, "task-succeeded", "done")  # before the outage: Flower had it
    w.at(start - 20, "task-received", "ends")
    w.at(start - 20, "task-started", "ends")
    w.at(start + 3, "task-revoked", "ends", host="child@h")  # sent while Redis was away
    w.at(back + 1, "task-received", "short")
    w.at(back + 4, "task-succeeded", "short")  # before Flower could be back
    w.at(back + 40, "task-failed", "late")  # long after: Flower was back
    gap = fe.Gap(start, back, back + 7 + fe.GRACE_S, fe.resend_times(start, back))
    assert [t - back for t in gap.due] == [2, 5, 10, 20]  # up to twice the outage, plus grace
    w.gaps = [gap]

    w._resend_due(back + 3)  # the first: what was sent until then
    assert w.copies == [
        ("task-received", "w@h", "ends"),
        ("task-started", "w@h", "ends"),
        ("task-revoked", "child@h", "ends"),
    ]
    w.copies.clear()
    w._resend_due(back + 5.5)  # the second, with short's events, in the order they were sent
    assert [(k, t) for k, _, t in w.copies] == [
        ("task-received", "ends"),
        ("task-started", "ends"),
        ("task-revoked", "ends"),
        ("task-received", "short"),
        ("task-succeeded", "short"),
    ]
    w.copies.clear()
    w._resend_due(back + 5.6)  # nothing due
    assert w.copies == []
    w._resend_due(back + 60)  # the last two at once; then the gap is done
    assert len(w.copies) == 5 and w.gaps == []
    w.copies.clear()
    w._resend_due(back + 200)
    assert w.copies == []


def test_a_long_outage_sends_its_events_for_longer() -> None:
    due = fe.resend_times(0.0, 100.0)  # Flower's tries may come 100 s apart by then
    assert max(due) - 100 >= 100 + fe.GRACE_S and max(due) - 100 <= 2 * 100 + fe.GRACE_S


def test_only_watched_processes_keep_events_and_only_task_events() -> None:
    app = make_celery(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert issubclass(app.events.Dispatcher, fe.Dispatcher)
    w = Kept()
    d = app.events.Dispatcher(app.connection_for_write(), hostname="w@h", enabled=False)
    d.enabled = True  # keeps, publishes nothing (no producer)
    fe._watch, old = w, fe._watch
    try:
        d.send("task-succeeded", retry=True, uuid="t", result="'succeeded'", runtime=1.5)
        d.send("worker-heartbeat", freq=2.0)
        d.send("task-progress", uuid="t")
    finally:
        fe._watch = old
    assert [(s.kind, s.hostname, s.fields) for s in w.sent] == [
        ("task-succeeded", "w@h", {"uuid": "t", "result": "'succeeded'", "runtime": 1.5})
    ]


def _event(kind: str, task: str, host: str, **fields: Any) -> dict[str, Any]:
    return Event(kind, uuid=task, hostname=host, clock=1, local_received=time.time(), **fields)


@pytest.mark.parametrize(
    ("kind", "state", "fields"),
    [
        ("task-succeeded", "SUCCESS", {"result": "'succeeded'", "runtime": 2.5}),
        ("task-failed", "FAILURE", {"exception": "RunFailed('job t failed')", "traceback": None}),
        ("task-revoked", "REVOKED", {"terminated": False, "signum": None, "expired": False}),
    ],
)
def test_a_copy_of_a_final_event_changes_nothing_in_flowers_state(
    kind: str, state: str, fields: dict[str, Any]
) -> None:
    flower = EventsState()
    story = [
        _event("task-received", "t", "w@h", name="sharpness.run_job", args="['t']"),
        _event("task-started", "t", "w@h"),
        _event(kind, "t", "w@h", **fields),
    ]
    for e in story:
        flower.event(dict(e))
    for e in story:  # the copies, in the order they were sent
        flower.event({**e, "timestamp": time.time() + 5})
    task = flower.tasks["t"]
    assert (task.state, task.worker.hostname, task.name) == (state, "w@h", "sharpness.run_job")
    for k, v in fields.items():
        assert getattr(task, k) == v
