from __future__ import annotations

import hashlib
import lzma
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.outputs import manifest
from imagesmith.repro import lock, mirror
from imagesmith.stages import bootstrap, plan

Write = Callable[[str, str], Path]
SHA = "a" * 64
CONFIG = "name: a\ndevice: qemu-amd64\npackages: [jq]\n"


def made(write: Write, epoch: int = 1700000000) -> tuple[lock.Lock, Path]:
    spec = load_spec(write("a.yaml", CONFIG))
    installed = [("jq", "1.7.1-6", "amd64"), ("libc6", "2:2.41-12", "amd64"), ("adduser", "3.152", "all")]
    hashes = {key: hashlib.sha256(key[0].encode()).hexdigest() for key in installed}
    result = lock.make(spec, bootstrap.packages(spec), hashes, epoch)
    path = lock.path_for(spec.config_path)
    lock.write(result, path)
    return result, path


def test_lock_file_next_to_the_config_and_per_variant() -> None:
    assert lock.path_for(Path("/p/minimal.yaml")) == Path("/p/minimal.yaml.lock")
    assert lock.path_for(Path("/p/minimal.yaml"), "dev") == Path("/p/minimal.dev.yaml.lock")


def test_apt_archive_names_decode_the_epoch() -> None:
    assert lock.deb_filename_fields("libc6_2%3a2.41-12_arm64.deb") == ("libc6", "2:2.41-12", "arm64")
    assert lock.deb_filename_fields("partial") is None
    assert lock.deb_filename_fields("a_b.deb") is None


def test_written_lock_reads_back_the_same(write: Write) -> None:
    result, path = made(write)
    text = path.read_text()
    assert '{name: "libc6", version: "2:2.41-12", architecture: "amd64"' in text
    back = lock.read(path)
    assert back.packages == result.packages
    assert back.source_date_epoch == 1700000000
    assert back.requested == result.requested and "jq" in back.requested
    assert (back.suite, back.mirror, back.snapshot) == ("trixie", "http://deb.debian.org/debian", None)
    assert back.digest_input() == result.digest_input()


def test_a_package_without_its_deb_cannot_be_locked(write: Write) -> None:
    spec = load_spec(write("a.yaml", CONFIG))
    with pytest.raises(ImagesmithError, match=r"no downloaded \.deb for jq 1"):
        lock.make(spec, [], {("jq", "1", "amd64"): ""}, 1)


def test_a_damaged_lock_is_a_located_config_error(write: Write) -> None:
    _, path = made(write)
    lines = path.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if '"jq"' in line and "sha256" in line)
    lines[number] = lines[number].replace('sha256: "', 'sha256: "zz')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImagesmithError) as caught:
        lock.read(path)
    assert caught.value.exit_code == EXIT_CONFIG
    assert str(caught.value).startswith(f"{path}:{number + 1}:")


def test_a_lock_for_other_packages_or_suite_is_refused(write: Write) -> None:
    result, path = made(write)
    result.path = path
    other = load_spec(write("a.yaml", "name: a\ndevice: qemu-amd64\npackages: [curl]\n"))
    with pytest.raises(
        ImagesmithError, match=r"packages changed since the lock was made: \+curl, -jq"
    ) as caught:
        lock.check_spec(result, other, bootstrap.packages(other))
    assert caught.value.exit_code == EXIT_CONFIG and "imagesmith lock" in (caught.value.hint or "")
    sid = load_spec(write("a.yaml", CONFIG + "distribution: {suite: sid}\n"))
    with pytest.raises(ImagesmithError, match="suite trixie, the config now says sid"):
        lock.check_spec(result, sid, bootstrap.packages(sid))
    moved = load_spec(write("a.yaml", CONFIG + "distribution: {mirror: 'http://mirror.example/debian'}\n"))
    notes = lock.check_spec(result, moved, bootstrap.packages(moved))
    assert "http://mirror.example/debian" in notes[0]


def test_preferences_pin_every_locked_version(write: Write) -> None:
    result, _ = made(write)
    text = lock.preferences(result)
    assert "Package: libc6\nPin: version 2:2.41-12\nPin-Priority: 1001\n" in text
    assert text.count("Pin-Priority: 1001") == 3


def test_snapshot_timestamp_of_a_snapshot_mirror() -> None:
    assert (
        mirror.snapshot_of("https://snapshot.debian.org/archive/debian/20261101T000000Z/")
        == "20261101T000000Z"
    )
    assert mirror.snapshot_of("http://deb.debian.org/debian") is None


def fake_mirror(root: Path, packages: str) -> str:
    """A file:// mirror with one suite, one component."""
    dists = root / "dists" / "trixie"
    (dists / "main" / "binary-amd64").mkdir(parents=True)
    data = lzma.compress(packages.encode())
    (dists / "main" / "binary-amd64" / "Packages.xz").write_bytes(data)
    size = len(data)
    (dists / "InRelease").write_text(
        f"Suite: trixie\nSHA256:\n {hashlib.sha256(data).hexdigest()} {size} main/binary-amd64/Packages.xz\n"
    )
    return f"file://{root}"


def test_locked_versions_missing_or_changed_on_the_mirror_are_named(write: Write, tmp_path: Path) -> None:
    result, path = made(write)
    result.path = path
    digest = {p.name: p.sha256 for p in result.packages}
    url = fake_mirror(
        tmp_path / "mirror",
        f"Package: jq\nVersion: 1.7.1-7\nArchitecture: amd64\nSHA256: {digest['jq']}\n\n"
        f"Package: libc6\nVersion: 2:2.41-12\nArchitecture: amd64\nSHA256: {'b' * 64}\n\n"
        f"Package: adduser\nVersion: 3.152\nArchitecture: all\nSHA256: {digest['adduser']}\n",
    )
    spec = load_spec(write("a.yaml", CONFIG + f"distribution: {{mirror: '{url}'}}\n"))
    with pytest.raises(ImagesmithError, match="2 locked package version") as caught:
        lock.check_available(result, spec)
    details = caught.value.details or ""
    assert "jq 1.7.1-6 (amd64): the mirror has 1.7.1-7" in details
    assert "libc6 2:2.41-12: the mirror's .deb has another sha256" in details
    assert "adduser" not in details
    assert "snapshot" in (caught.value.hint or "")


def test_an_unreachable_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImagesmithError, match="cannot read the mirror's index"):
        mirror.fetch(f"file://{tmp_path}/none", "trixie", ["main"], "amd64")


def test_installed_set_must_equal_the_lock(write: Write) -> None:
    result, path = made(write)
    installed = {(p.name, p.version, p.architecture): p.sha256 for p in result.packages}
    lock.check_installed(result, installed, path)  # exactly the lock: fine
    installed[("jq", "1.7.1-6", "amd64")] = SHA
    installed[("curl", "8", "amd64")] = SHA
    del installed[("adduser", "3.152", "all")]
    with pytest.raises(ImagesmithError, match="3 difference") as caught:
        lock.check_installed(result, installed, path)
    details = caught.value.details or ""
    assert "not installed: adduser 3.152 all" in details
    assert "not in the lock: curl 8 amd64" in details
    assert "sha256 differs: jq 1.7.1-6 amd64" in details


def test_the_lock_is_an_input_of_the_bootstrap_only(write: Write) -> None:
    spec = load_spec(write("a.yaml", CONFIG))
    result, _ = made(write)
    tools = manifest.host_tools()
    free = {p.name: p for p in plan.stages(spec, b"s", tools)}
    pinned = {p.name: p for p in plan.stages(spec, b"s", tools, result)}
    assert "lock" in pinned["bootstrap"].inputs and "lock" not in free["bootstrap"].inputs
    assert free["bootstrap"].key != pinned["bootstrap"].key
    result.packages[0] = result.packages[0].model_copy(update={"version": "9"})
    repinned = {p.name: p for p in plan.stages(spec, b"s", tools, result)}
    assert repinned["bootstrap"].key != pinned["bootstrap"].key


def test_the_relock_hint_names_the_variant(write: Write) -> None:
    result, path = made(write)
    result.path = path
    assert (
        lock.relock_command(result, Path("/p/a.yaml"))
        == "`imagesmith lock /p/a.yaml` (or build with --update-lock)"
    )
    result.path = lock.path_for(Path("/p/a.yaml"), "dev")
    assert lock.relock_command(result, Path("/p/a.yaml")).startswith(
        "`imagesmith lock /p/a.yaml --variant dev`"
    )


def test_the_index_is_parsed_line_by_line_never_held_whole(tmp_path: Path) -> None:
    import tracemalloc

    stanzas = [
        f"Package: p{i}\nVersion: 1.{i}\nArchitecture: amd64\nProvides: v{i} (= 1), w{i}\n"
        f"Description: package {i}\n{' .' * 2000}\nSHA256: {i:064x}\n"
        for i in range(8000)
    ]
    text = "\n".join(stanzas)  # the last stanza has no blank line after it
    size = len(text)
    assert size > 32_000_000
    url = fake_mirror(tmp_path / "mirror", "")
    data = lzma.compress(text.encode(), preset=0)  # quick to make; a 256 KiB dictionary
    del text, stanzas
    (tmp_path / "mirror/dists/trixie/main/binary-amd64/Packages.xz").write_bytes(data)
    (tmp_path / "mirror/dists/trixie/InRelease").write_text(
        f"SHA256:\n {hashlib.sha256(data).hexdigest()} {len(data)} main/binary-amd64/Packages.xz\n"
    )
    tracemalloc.start()
    try:
        index = mirror._fetch(url, "trixie", ["main"], "amd64")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(index.packages) == 8000 and index.versions("p7999", "amd64") == {"1.7999": f"{7999:064x}"}
    assert {"v0", "w0", "v7999"} <= index.provided
    # held whole, the index alone would be over 32 MB (and its text copies more)
    assert peak < size / 4, (peak, size)


def test_an_index_read_once_is_shared_and_merging_changes_neither(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []

    def read(url: str, suite: str, components: list[str], arch: str) -> mirror.Index:
        reads.append(url)
        return mirror.Index({("base-files", arch): {"13": "a" * 64}}, {"ssh-server"} if "x" in url else set())

    monkeypatch.setattr(mirror, "_FETCHED", {})
    monkeypatch.setattr(mirror, "_fetch", read)
    main = mirror.fetch("http://m", "trixie", ["main"], "arm64")
    assert mirror.fetch("http://m", "trixie", ["main"], "arm64") is main and reads == ["http://m"]
    extra = mirror.Index({("base-files", "arm64"): {"14": "b" * 64}, ("kernel", "arm64"): {"1": "c" * 64}})
    both = main.merged(extra)
    assert both.versions("base-files", "arm64") == {"13": "a" * 64, "14": "b" * 64}
    assert both.names() == {"base-files", "kernel"}
    # the shared index is as it was read
    assert main.packages == {("base-files", "arm64"): {"13": "a" * 64}}
    assert mirror.fetch("http://m", "trixie", ["main"], "arm64").versions("kernel", "arm64") == {}
