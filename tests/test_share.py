"""The shared stage cache against a real registry (docker-registry on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from imagesmith.cache import CONTENT, Cache
from imagesmith.cache.remote import Address
from imagesmith.cache.share import Shared, open_shared, team_salt
from imagesmith.config.load import load_spec
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.host.run import Runner
from imagesmith.outputs import sign
from imagesmith.stages import plan
from tests import registry as oci

STAGE, KEY = "bootstrap", "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[oci.Registry]:
    with oci.running(tmp_path_factory.mktemp("registry")) as found:
        yield found


def key_pair(where: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = where / f"{name}.pem", where / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: key_pair(tmp_path, name) for name in ("team", "stranger")}


def made(cache: Cache, key: str = KEY) -> None:
    """An entry like a stage's: a tree with a link, modes, a hole, and facts."""

    def fill(entry: Path) -> None:
        root = entry / "rootfs"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "shadow").write_text("root:*:1::::::\n")
        (root / "etc" / "shadow").chmod(0o640)
        (root / "bin").symlink_to("usr/bin")
        with open(entry / "image.raw", "wb") as sparse:
            sparse.truncate(64 * 1024 * 1024)
            sparse.write(b"start")
        os.chown(root / "etc" / "shadow", 0, 42)

    cache.commit(
        STAGE, key, fill, {"inputs": {"x": "y"}, "configs": ["/home/someone/secret-project/img.yaml"]}
    )


def opened(url: str, key: Path | None, *trusted: Path) -> Shared | None:
    """As the command line opens it, from key files."""
    signer = sign.load_private_key(key) if key else None
    return open_shared(url, signer, [sign.load_public_key(path) for path in trusted])


def shared(url: str, key: Path | None, *trusted: Path) -> Shared:
    found = opened(url, key, *trusted)
    assert found is not None
    found.secret = set()  # as a build sets it once its keys are known
    return found


def test_an_entry_pushed_by_one_machine_is_pulled_whole_by_another(
    registry: oci.Registry, tmp_path: Path, keys: dict[str, tuple[Path, Path]], runner: Runner
) -> None:
    a, b = Cache(tmp_path / "a"), Cache(tmp_path / "b")
    made(a)
    team_key, team_pub = keys["team"]
    assert shared(registry.url, team_key).push(a, [(STAGE, KEY), ("disk", KEY)], runner) == [STAGE]
    assert shared(registry.url, team_key).push(a, [(STAGE, KEY)], runner) == []  # there already
    entry = shared(registry.url, None, team_pub).pull(b, STAGE, KEY, runner)
    assert entry is not None and entry.path.parent == b.root / "entries"
    original = a.lookup(STAGE, KEY)
    assert original is not None
    assert entry.meta[CONTENT] == original.meta[CONTENT]
    assert entry.meta["inputs"] == {"x": "y"}
    shadow = (entry.path / "rootfs/etc/shadow").stat()
    assert (shadow.st_mode & 0o777, shadow.st_gid) == (0o640, 42)
    assert os.readlink(entry.path / "rootfs/bin") == "usr/bin"
    image = (entry.path / "image.raw").stat()
    assert image.st_size == 64 * 1024 * 1024 and image.st_blocks * 512 < 1024 * 1024  # the hole stays one
    # what only means something on the machine that made it is not shared
    for blob in registry.blobs():
        assert b"secret-project" not in blob.read_bytes()
    assert not list((b.root / "tmp").iterdir())


def test_an_entry_signed_by_another_key_is_refused(
    registry: oci.Registry, tmp_path: Path, keys: dict[str, tuple[Path, Path]], runner: Runner
) -> None:
    a, b = Cache(tmp_path / "a"), Cache(tmp_path / "b")
    key = "1" * 32
    made(a, key)
    shared(registry.url, keys["stranger"][0]).push(a, [(STAGE, key)], runner)
    assert shared(registry.url, None, keys["team"][1]).pull(b, STAGE, key, runner) is None
    assert b.lookup(STAGE, key) is None
    assert "signed by a key this build does not trust" in (tmp_path / "test.log").read_text()


def test_a_tampered_blob_is_refused_and_leaves_nothing(
    registry: oci.Registry, tmp_path: Path, keys: dict[str, tuple[Path, Path]], runner: Runner
) -> None:
    a, b = Cache(tmp_path / "a"), Cache(tmp_path / "b")
    key = "2" * 32
    made(a, key)
    before = set(registry.blobs())
    shared(registry.url, keys["team"][0]).push(a, [(STAGE, key)], runner)
    zstd = b"\x28\xb5\x2f\xfd"  # the archive, not the manifest or its config
    archive = next(p for p in set(registry.blobs()) - before if p.read_bytes().startswith(zstd))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert shared(registry.url, None, keys["team"][1]).pull(b, STAGE, key, runner) is None
    assert b.lookup(STAGE, key) is None and not list((b.root / "tmp").iterdir())
    assert "is not the one it was signed with" in (tmp_path / "test.log").read_text()


def test_a_signed_entry_cannot_stand_in_for_another_key(
    registry: oci.Registry, tmp_path: Path, keys: dict[str, tuple[Path, Path]], runner: Runner
) -> None:
    import urllib.request

    a, b = Cache(tmp_path / "a"), Cache(tmp_path / "b")
    key, other = "3" * 32, "4" * 32
    made(a, key)
    shared(registry.url, keys["team"][0]).push(a, [(STAGE, key)], runner)
    base = registry.url.replace("oci+http://", "http://").replace("/team/", "/v2/team/", 1)
    kind = "application/vnd.oci.image.manifest.v1+json"
    with urllib.request.urlopen(
        urllib.request.Request(f"{base}/manifests/{STAGE}-{key}", headers={"Accept": kind})
    ) as r:
        manifest = r.read()
    put = urllib.request.Request(
        f"{base}/manifests/{STAGE}-{other}", data=manifest, method="PUT", headers={"Content-Type": kind}
    )
    with urllib.request.urlopen(put) as r:
        assert r.status == 201
    assert shared(registry.url, None, keys["team"][1]).pull(b, STAGE, other, runner) is None
    assert "not as the entry asked for" in (tmp_path / "test.log").read_text()


def test_a_registry_that_is_down_is_said_once_and_costs_seconds(
    tmp_path: Path, keys: dict[str, tuple[Path, Path]], runner: Runner
) -> None:
    a = Cache(tmp_path / "a")
    made(a)
    down = shared(f"oci+http://127.0.0.1:{oci.free_port()}/team/cache", keys["team"][0])
    start = time.monotonic()
    assert down.pull(a, "disk", KEY, runner) is None
    assert down.pull(a, "filesystems", KEY, runner) is None
    assert down.push(a, [(STAGE, KEY)], runner) == []
    assert time.monotonic() - start < 20
    assert (tmp_path / "test.log").read_text().count("cannot be used") == 1


def test_a_machine_without_a_key_only_pulls(
    registry: oci.Registry, tmp_path: Path, keys: dict[str, tuple[Path, Path]], runner: Runner
) -> None:
    a = Cache(tmp_path / "a")
    key = "5" * 32
    made(a, key)
    assert shared(registry.url, None, keys["team"][1]).push(a, [(STAGE, key)], runner) == []
    assert "only pulls" in (tmp_path / "test.log").read_text()


def test_nothing_is_shared_before_the_build_knows_its_secret_stages(
    registry: oci.Registry, tmp_path: Path, keys: dict[str, tuple[Path, Path]], runner: Runner
) -> None:
    a = Cache(tmp_path / "a")
    key = "6" * 32
    made(a, key)
    found = opened(registry.url, keys["team"][0])
    assert found is not None
    assert found.push(a, [(STAGE, key)], runner) == []
    found.secret = {STAGE}
    assert found.push(a, [(STAGE, key)], runner) == []
    found.secret = set()
    assert found.push(a, [(STAGE, key)], runner) == [STAGE]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://registry.example/cache", "not an oci:// address"),
        ("oci://user:hunter22@registry.example/cache", "credentials in the address"),
        ("oci://registry.example", "needs a host and a repository"),
        ("oci://registry.example/Team/Cache", "lower-case"),
        ("oci://registry.example:port/cache", "port is not a number"),
    ],
)
def test_a_bad_address_is_a_config_error_that_never_shows_credentials(url: str, said: str) -> None:
    with pytest.raises(ImagesmithError) as info:
        Address.parse(url)
    assert info.value.exit_code == EXIT_CONFIG and said in info.value.message
    assert "hunter22" not in info.value.message


def test_a_remote_needs_a_key_to_trust(tmp_path: Path) -> None:
    with pytest.raises(ImagesmithError, match="needs a key to trust") as info:
        open_shared("oci://registry.example/cache", None, ())
    assert info.value.exit_code == EXIT_CONFIG


def test_a_team_salt_replaces_the_cache_s_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESMITH_CACHE_SALT", "short")
    with pytest.raises(ImagesmithError, match="too short"):
        team_salt()
    monkeypatch.setenv("IMAGESMITH_CACHE_SALT", "a-team-salt-of-enough-length")
    salt = team_salt()
    assert salt == b"a-team-salt-of-enough-length"
    assert Cache(tmp_path / "c", salt=salt).salt == salt
    assert Cache(tmp_path / "d").salt != salt


def test_secret_stages_are_the_ones_after_a_secret(
    write: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASH", "$6$a$b")
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: x\ndevice: qemu-amd64\n")
    secret = tmp_path / "secret.yaml"
    secret.write_text("name: x\ndevice: qemu-amd64\nusers: [{name: ops, password_hash: !env HASH}]\n")
    assert plan.secret_stages(load_spec(plain), {}) == set()
    assert plan.secret_stages(load_spec(secret), {}) == {"customize", "filesystems", "disk"}


def test_the_statement_is_what_the_registry_shows(
    registry: oci.Registry, tmp_path: Path, keys: dict[str, tuple[Path, Path]], runner: Runner
) -> None:
    a = Cache(tmp_path / "a")
    key = "7" * 32
    made(a, key)
    shared(registry.url, keys["team"][0]).push(a, [(STAGE, key)], runner)
    manifests = [
        json.loads(p.read_bytes())
        for p in registry.blobs()
        if p.stat().st_size < 100_000 and p.read_bytes().startswith(b"{") and b"statement" in p.read_bytes()
    ]
    statement = next(
        json.loads(m["annotations"]["org.imagesmith.cache.statement"])
        for m in manifests
        if key in m["annotations"]["org.imagesmith.cache.statement"]
    )
    assert (
        statement["stage"] == STAGE
        and statement["key"] == key
        and statement["facts"] == {"inputs": {"x": "y"}}
    )
