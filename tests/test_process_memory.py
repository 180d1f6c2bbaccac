"""Freed memory goes back to the system when asked (what keeps a serving worker small after an update cycle)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kbservice.process_memory import resident_mb, return_freed_memory

# Run in a fresh interpreter: the heap of the test process is shared with everything else the suite did.
_PROGRAM = """
import json
from kbservice.process_memory import resident_mb, return_freed_memory
blocks = [bytearray(100_000) for _ in range(3000)]  # ~300 MB in heap-sized pieces (below the mmap threshold)
pin = bytearray(100_000)  # allocated last: the freed blocks below it cannot be trimmed off the heap's top
for block in blocks:
    block[0] = 1
del blocks
freed = resident_mb()
return_freed_memory()
print(json.dumps({"freed": freed, "trimmed": resident_mb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_freed_memory_is_handed_back() -> None:
    assert resident_mb() is not None and resident_mb(os.getpid()) is not None
    assert resident_mb(2**22 + 12345) is None  # no such process
    import json

    done = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout)
    assert figures["freed"] - figures["trimmed"] > 200, figures  # MB
    assert return_freed_memory() is True
