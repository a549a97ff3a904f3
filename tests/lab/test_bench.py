"""The benchmark script runs (N=2, one repetition) and prints its Markdown table."""

from __future__ import annotations

import subprocess
import sys

from tests.lab.conftest import REPO


def test_bench_runs_for_two_hosts() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "tasks" / "bench.py"), "--hosts", "2", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| step | 2 hosts")
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    for step in (
        "setup (fresh)",
        "setup (in sync)",
        "verify",
        "teardown",
        "reference setup+verify+teardown",
        "peak RSS of orch, MiB",
    ):
        assert step in rows, out.stdout
        assert rows[step].split("|")[2].strip() != "-"
