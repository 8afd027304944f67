"""What /proc says about processes: a process tree, resident memory, CPU time (Linux only).

The benchmarks measure servers and workers from outside, as an operator would."""

from __future__ import annotations

import os
from pathlib import Path


def _stats() -> dict[int, list[str]]:
    """Every process' /proc/<pid>/stat fields after the command name (ppid first)."""
    out: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            out[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1:]
        except OSError:
            continue
    return out


def descendants(root_pids: list[int], stats: dict[int, list[str]] | None = None) -> set[int]:
    """The processes `root_pids` and all their descendants alive now."""
    stats = _stats() if stats is None else stats
    wanted = set(root_pids)
    grew = True
    while grew:
        more = {pid for pid, fields in stats.items() if int(fields[0]) in wanted} - wanted
        wanted |= more
        grew = bool(more)
    return wanted


def cpu_seconds(root_pids: list[int]) -> float:
    """User + system CPU seconds of the processes `root_pids` and all their descendants
    (children that exited are not counted, so measure while they run)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = _stats()
    pids = descendants(root_pids, stats)
    return sum((int(stats[p][10]) + int(stats[p][11])) / tick for p in pids if p in stats)


def rss(pid: int) -> int:
    """Resident bytes of process `pid` now (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    """The command line of `pid`, arguments separated by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
