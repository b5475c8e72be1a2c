"""Build farms: stage results shared through a real OCI registry (docker-registry on
127.0.0.1), signed, checked, and only where no secret is in them."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import registry as oci
from tests.test_share import key_pair

from .conftest import imagesmith

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "cache"
SECRET = "includes: [image.yaml]\nusers: [{name: ops, password_hash: !env OPS_HASH}]\n"
HASH = "$6$farmsalt$39jUPTNH/RmcE6KYdfEjMFQ9UI/3g3xsYRCwT2bKPaieLvdelhexGEfq2d9ZO9qNfuqScrVuBPP74GCOc2F.c0"
TEAM_SALT = "0f3c9a1e8b7d6c5f4a3b2c1d0e9f8a7b"
RAN = re.compile(r"^▶ (bootstrap|packages|customize|filesystems|disk)(?!: from the cache)", re.M)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path | str]]:
    root = tmp_path_factory.mktemp("farm")
    with oci.running(root / "registry") as registry:
        key, pub = key_pair(root, "team")
        projects = {}
        for machine in ("a", "b", "c"):  # each machine has its own checkout, at another path
            projects[machine] = root / f"checkout-{machine}" / "project"
            shutil.copytree(DATA, projects[machine], symlinks=True)
            (projects[machine] / "secret.yaml").write_text(SECRET)
        yield {"root": root, "url": registry.url, "key": key, "pub": pub, **projects}


def build(farm: dict[str, Path | str], machine: str, config: str, cache: Path | None, *extra: str,
          **env: str) -> tuple[str, str]:  # fmt: skip
    """Build on ``machine`` (its checkout; ``cache``: its own stage cache, None: the worker's)
    with the shared cache; the stages that ran, and the image's sha256."""
    out = Path(farm["root"]) / f"out-{machine}-{config}-{len(list(Path(farm['root']).glob('out-*')))}"
    args = ["build", str(Path(farm[machine]) / config), "-o", str(out), "--cache-remote", str(farm["url"])]
    args += [*(["--cache-dir", str(cache)] if cache else []), *extra]
    proc = imagesmith(*args, env={"OPS_HASH": HASH, **env})
    sums = (out / "SHA256SUMS").read_text()
    digest = next(line.split()[0] for line in sums.splitlines() if line.endswith(".img"))
    return " ".join(RAN.findall(proc.stderr)), digest + "\n" + proc.stderr


def test_a_second_machine_with_an_empty_cache_runs_no_stage(farm: dict[str, Path | str]) -> None:
    _, first = build(farm, "a", "image.yaml", None, "--cache-key", str(farm["key"]))
    assert "to " + str(farm["url"]) in first  # each stage's entry pushed
    ran_b, second = build(
        farm, "b", "image.yaml", Path(farm["root"]) / "cache-b", "--cache-trust", str(farm["pub"])
    )
    assert ran_b == ""  # every stage came from the registry
    assert "from " + str(farm["url"]) in second
    assert second.splitlines()[0] == first.splitlines()[0]  # the same image, bit for bit


def test_stages_with_a_secret_are_shared_only_under_a_team_salt(farm: dict[str, Path | str]) -> None:
    key, pub = ("--cache-key", str(farm["key"])), ("--cache-trust", str(farm["pub"]))
    root = Path(farm["root"])
    ran, said = build(farm, "b", "secret.yaml", root / "cache-b-secret", *key)
    # the bootstrap holds no secret and came from the registry; what follows the secret
    # ran, and was not pushed
    assert ran == "customize filesystems disk", said
    assert re.findall(r"^  (\w+) \w{12} to ", said, re.M) == []
    assert HASH not in said
    build(farm, "a", "secret.yaml", None, *key, IMAGESMITH_CACHE_SALT=TEAM_SALT)
    ran, said = build(farm, "c", "secret.yaml", root / "cache-c", *pub, IMAGESMITH_CACHE_SALT=TEAM_SALT)
    assert ran == "", said
    assert TEAM_SALT not in said


def test_a_registry_that_is_down_does_not_break_the_build(farm: dict[str, Path | str]) -> None:
    down = f"oci+http://127.0.0.1:{oci.free_port()}/team/cache"
    out = Path(farm["root"]) / "out-down"
    proc = imagesmith("build", str(Path(farm["a"]) / "image.yaml"), "-o", str(out), "--cache-remote", down,
                      "--cache-key", str(farm["key"]))  # fmt: skip
    assert proc.stderr.count("cannot be used") == 1
    assert (out / "SHA256SUMS").is_file()


def test_two_configs_in_one_command_share_one_install(farm: dict[str, Path | str]) -> None:
    project = Path(farm["a"])
    for name in ("red", "blue"):  # a package no other test adds: a packages stage made here
        (project / f"{name}.yaml").write_text(f"includes: [image.yaml]\nname: {name}\nhostname: {name}\n"
                                               "packages: [jq]\n")  # fmt: skip
    out = Path(farm["root"]) / "out-many"
    proc = imagesmith(
        "build", str(project / "red.yaml"), str(project / "blue.yaml"), "-o", str(out), "-j", "2"
    )
    assert "building 2 configs, 2 at a time" in proc.stderr
    logs = [(out / name / "build.log").read_text() for name in ("red", "blue")]
    made = [line for log in logs for line in log.splitlines() if line.startswith("==> packages:")]
    assert sorted(made) == ["==> packages: from the cache", "==> packages: the config's own: jq"]
    for name in ("red", "blue"):
        assert (out / name / f"{name}.img").is_file()
