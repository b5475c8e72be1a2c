"""The benchmarks in bench/ still start: each imports the parts of imagesmith it uses and
prints its usage (a renamed module once broke one unnoticed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p for p in BENCH.iterdir() if p.is_file() and not p.suffix)


def test_there_are_benchmarks() -> None:
    assert {p.name for p in SCRIPTS} >= {"cold_build", "incremental", "size", "farm"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_starts(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
