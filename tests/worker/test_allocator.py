"""The worker's allocator setting (tasks.worker.allocator): memory freed in blocks of a few
MiB, as a Hessian-vector product frees its per-parameter pieces, goes back to the operating
system, where glibc's default would keep it; measured on a fresh interpreter's resident
memory, with and without the setting."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROGRAM = """
import sys
import torch
from tasks.worker.allocator import return_large_blocks

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

if sys.argv[1] == "set":
    assert return_large_blocks()
first = torch.ones(8 << 20, dtype=torch.uint8)
del first  # a freed mapped block: glibc's default threshold rises to 8 MiB
blocks = [torch.ones(2 << 20, dtype=torch.uint8) for _ in range(100)]
pin = torch.ones(2 << 20, dtype=torch.uint8)  # allocated after them: the heap cannot shrink
held = resident()
del blocks
print((held - resident()) / (200 << 20))
"""


def freed_share(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_freed_blocks_of_a_few_mib_leave_the_process() -> None:
    assert freed_share("default") < 0.2  # glibc's default keeps them in its heap
    assert freed_share("set") > 0.9
