from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from imagesmith.host.run import Runner

REPO = Path(__file__).resolve().parent.parent
#: the property tests' generated cases: 600 each in the whole suite (`./dev test`, and so CI,
#: passes --hypothesis-profile=suite), 150 when the fast tests run alone
for _name, _examples in (("suite", 600), ("fast", 150)):
    settings.register_profile(
        _name, max_examples=_examples, deadline=None, suppress_health_check=list(HealthCheck)
    )
settings.load_profile("fast")  # --hypothesis-profile, read later, overrides it
EXAMPLE_KEY = (REPO / "examples" / "keys" / "admin.pub").read_text().strip()
#: The longest modules of real builds, longest first (worker-seconds measured with pytest
#: --durations on a 2-core machine, 2026-12-04): `./dev test` hands out modules in
#: collection order (--dist loadfile, --no-loadscope-reorder), so each worker starts on
#: a long one and both end together.
LONGEST_FIRST = [
    "e2e/test_ota_arm64.py",  # 1470 s: an arm64 build and six boots through U-Boot
    "e2e/test_pi4.py",  # 1060 s: two Pi 4 builds from empty caches, at once
    "e2e/test_ota_pi_arm64.py",  # 560 s
    "e2e/test_cache_amd64.py",  # 500 s
    "e2e/test_raspberrypi_arm64.py",  # 380 s
    "e2e/test_publish_amd64.py",
    "e2e/test_fresh_machine.py",
    "e2e/test_storage_amd64.py",
    "e2e/test_reproducible_amd64.py",
    "e2e/test_farm_amd64.py",
    "e2e/test_kiosk_amd64.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules of LONGEST_FIRST first, in its order; the rest as collected."""

    def rank(item: pytest.Item) -> int:
        module = item.path.relative_to(REPO / "tests").as_posix()
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: a module's tests keep their order


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
