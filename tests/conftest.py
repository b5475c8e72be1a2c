from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.host.run import Runner

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_KEY = (REPO / "examples" / "keys" / "admin.pub").read_text().strip()


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a dedented text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    r = Runner(log_path=tmp_path / "test.log")
    yield r
    r.close()
