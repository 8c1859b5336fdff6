"""CPU training keeps the memory it frees (rmsd.train.host_memory)."""

import json
import subprocess
import sys

import pytest

# a training step's pattern: large tensors made, held to the step's end, freed, and made again the
# next step; the page faults of each step count the pages the kernel had to hand out afresh
CHILD = """
import json, resource, sys, torch
from rmsd.train.host_memory import keep_freed_memory
told = keep_freed_memory() if sys.argv[1] == "keep" else False
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps = []
for step in range(4):
    before = faults()
    held = [torch.ones(2**20 * (8 + 8 * i)) for i in range(6)]  # 32 to 192 MB
    del held
    steps.append(faults() - before)
print(json.dumps([told, steps]))
"""


def _faults_per_step(mode: str) -> tuple[bool, list[int]]:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_steps_after_the_first_reuse_the_freed_pages():
    told, kept = _faults_per_step("keep")
    _, default = _faults_per_step("default")
    assert told
    assert min(default[1:]) > 0.9 * default[0]  # malloc's default: every step's blocks are fresh pages
    assert max(kept[1:]) < default[0] / 2


def test_it_can_be_turned_off(monkeypatch):
    from rmsd.train.host_memory import ENV, keep_freed_memory

    monkeypatch.setenv(ENV, "0")
    assert keep_freed_memory() is False
