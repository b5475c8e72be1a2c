"""The quick no-op (quick.py): a call answered from its record while everything it read
holds, and never once anything it read, or the outputs, changed."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagesmith import filestate, quick
from imagesmith.build import current
from imagesmith.cache import Cache
from imagesmith.host import userns


@dataclass
class Call:
    root: Path  # the project: config, overlay
    cache: Cache
    out: Path
    argv: list[str]
    env: dict[str, str]

    def answer(self, argv: list[str] | None = None, env: dict[str, str] | None = None) -> list[str]:
        """The lines of the answer; [] when the call is left to a build."""
        lines: list[str] = []
        answered = quick.answer(argv or self.argv, self.env if env is None else env, lines.append)
        assert answered == bool(lines)
        return lines


def decide(call: Call, key: str = "key-1") -> quick.Recorder:
    """What a build's decision reads, recorded: a config opened, an overlay listed and its
    file read, a layer looked for where there is none, the project directory looked up."""
    recorder = quick.Recorder(call.argv, call.env)
    with quick.recording(recorder):
        (call.root / "image.yaml").read_text()
        for path in sorted((call.root / "overlay").iterdir()):
            path.read_bytes()
        assert not (call.root / "layers" / "extra.yaml").exists()
        assert call.root.is_dir()
    return recorder


def publish(call: Call, recorder: quick.Recorder, key: str = "key-1") -> None:
    """The build's outputs and what it keeps of them, then the record of the call."""
    files = []
    for name, text in (("x.img", "image"), ("manifest.json", "{}"), ("SHA256SUMS", "sums")):
        (call.out / name).write_text(text)
        files.append(call.out / name)
    current.record(call.cache, call.out, key, files, {})
    entry = call.cache.root / "entries" / "disk-k1"
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "meta.json").write_text(json.dumps({"stage": "disk", "key": "k1", "last_used": 1.0}))
    replay = {
        "notes": ["note: a note"],
        "head": "building x for qemu-amd64 (amd64), layout simple, from image.yaml",
        "layers": "layers: base",
        "image": str(call.out / "x.img"),
        "summary": [f"  {path}" for path in files],
        "entries": [["disk", "k1"]],
        "config": str(call.root / "image.yaml"),
        "config_id": "cfg",
        "stages": {"disk": {"key": "k1", "inputs": {}}},
    }
    recorder.save(call.cache.root, call.cache.own_salt(), call.out, key, replay)


@pytest.fixture
def call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Call]:
    root = tmp_path / "project"
    (root / "overlay").mkdir(parents=True)
    (root / "image.yaml").write_text("name: x\n")
    (root / "overlay" / "motd").write_text("hello\n")
    out = tmp_path / "out"
    out.mkdir()
    cache = Cache(tmp_path / "cache")
    argv = ["build", str(root / "image.yaml"), "-o", str(out), "--cache-dir", str(cache.root)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    monkeypatch.chdir(tmp_path)
    # inputs written just now vouch as if older than a timestamp's granularity (the
    # margin has a test of its own)
    monkeypatch.setattr(quick, "FINE_NS", 0)
    made = Call(root, cache, out, argv, env)
    recorder = decide(made)
    assert recorder.why_not is None, recorder.why_not
    publish(made, recorder)
    yield made


def records(call: Call) -> list[Path]:
    return sorted((call.cache.root / "published").glob("call-*.json"))


def test_a_call_made_again_is_answered_as_an_up_to_date_build(call: Call) -> None:
    lines = call.answer()
    assert lines[:3] == ["note: a note", "building x for qemu-amd64 (amd64), layout simple, from image.yaml",
                         f"▶ {quick.LABEL}"]  # fmt: skip
    assert f"done in 0.0s: {call.out / 'x.img'}" in lines and f"  {call.out / 'SHA256SUMS'}" in lines
    log = (call.out / "build.log").read_text()
    assert log.startswith("building x for") and "layers: base\n" in log and f"==> {quick.LABEL}" in log
    meta = json.loads((call.cache.root / "entries" / "disk-k1" / "meta.json").read_text())
    assert meta["last_used"] > 1.0 and meta["configs"] == [str(call.root / "image.yaml")]
    assert json.loads((call.cache.root / "builds" / "cfg.json").read_text()) == {
        "disk": {"key": "k1", "inputs": {}}
    }


CHANGES = [
    "config rewritten",
    "overlay file chmod",
    "file added to a listed directory",
    "a path looked for and missing now there",
    "published file changed",
    "published under another key",
    "record of the outputs forgotten",
]


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_what_the_decision_read_or_to_the_outputs_is_left_to_a_build(
    call: Call, change: str
) -> None:
    if change == "config rewritten":
        (call.root / "image.yaml").write_text("name: x\n")  # the same bytes: the identity says "written"
    elif change == "overlay file chmod":
        (call.root / "overlay" / "motd").chmod(0o600)
    elif change == "file added to a listed directory":
        (call.root / "overlay" / "issue").write_text("new\n")
    elif change == "a path looked for and missing now there":
        (call.root / "layers").mkdir()
        (call.root / "layers" / "extra.yaml").write_text("packages: [jq]\n")
    elif change == "published file changed":
        (call.out / "x.img").write_text("IMAGE")
    elif change == "published under another key":
        current.record(call.cache, call.out, "key-2", [call.out / "x.img"], {})
    elif change == "record of the outputs forgotten":
        call.cache.forget_published(call.out)
    assert call.answer() == []


def test_the_working_directory_listed_without_a_name_is_an_input(call: Call) -> None:
    recorder = quick.Recorder(call.argv)
    with quick.recording(recorder):
        os.listdir()
    assert recorder.seen[os.getcwd()][1]  # whole: what it holds was read


def test_a_directory_looked_up_through_may_change(call: Call) -> None:
    """What a lookup learns of a directory is which one it is, not what else it holds."""
    (call.root / "notes.txt").write_text("an editor's file beside the config\n")
    assert call.answer() != []


def test_another_call_is_not_answered(call: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert call.answer([*call.argv, "--verbose"]) == []
    assert call.answer(env={**call.env, "SOURCE_DATE_EPOCH": "1"}) == []
    assert call.answer(env={**call.env, userns.MARK: "1"}) != []  # the re-run in a user namespace is the call
    assert quick.USERNS_MARK == userns.MARK
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert call.answer() == []


def test_outputs_being_written_by_another_build_are_left_to_a_build(call: Call) -> None:
    fd = os.open(call.out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert call.answer() == []
    finally:
        os.close(fd)
    assert call.answer() != []


def test_the_record_holds_no_secret(tmp_path: Path, call: Call) -> None:
    argv = [*call.argv, "--set", "secrets.wifi=hunter2-argv"]
    env = {**call.env, "IMAGESMITH_SECRET_WIFI": "hunter2-env"}
    recorder = quick.Recorder(argv, env)
    with quick.recording(recorder):
        (call.root / "image.yaml").read_text()
    publish(call, recorder)
    text = "".join(path.read_text() for path in records(call))
    assert "hunter2" not in text and "IMAGESMITH_SECRET_WIFI" not in text
    assert call.answer(argv, env) != []


def test_one_record_per_output_directory(call: Call) -> None:
    assert len(records(call)) == 1
    recorder = decide(Call(call.root, call.cache, call.out, [*call.argv, "--verbose"], call.env))
    publish(call, recorder)
    assert len(records(call)) == 1
    assert call.answer() == [] and call.answer([*call.argv, "--verbose"]) != []


def test_what_identities_cannot_vouch_for_keeps_no_record(call: Call) -> None:
    for why, act in (
        ("the program 'true'", lambda: subprocess.run(["true"], check=True)),
        ("the network", lambda: socket.getaddrinfo("localhost", 80)),
    ):
        recorder = quick.Recorder(call.argv)
        with quick.recording(recorder):
            act()
        assert recorder.why_not is not None and why in recorder.why_not


def test_the_package_database_vouches_for_dpkg_query(call: Call) -> None:
    recorder = quick.Recorder(call.argv)
    with quick.recording(recorder):
        subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, check=True)
    assert recorder.why_not is None and "/var/lib/dpkg/status" in recorder.seen


def test_a_file_changed_while_read_or_during_the_build_keeps_no_record(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quick, "FINE_NS", 100_000_000)
    config = call.root / "image.yaml"
    config.write_text("name: y\n")  # within a timestamp's granularity of the read below
    recorder = quick.Recorder(call.argv)
    with quick.recording(recorder):
        config.read_text()
    recorder.inputs(call.cache.root, call.out)
    assert recorder.why_not is not None and "changed just before it was read" in recorder.why_not
    time.sleep(0.15)  # past the margin: now it vouches
    recorder = decide(call)
    assert recorder.why_not is None
    (call.root / "overlay" / "motd").write_text("changed while the stages ran\n")
    for path in records(call):
        path.unlink()
    publish(call, recorder)
    assert recorder.why_not is not None and "changed during the build" in recorder.why_not
    assert records(call) == [] and call.answer() == []


def test_the_cache_and_the_outputs_are_not_inputs(call: Call) -> None:
    """A build makes its output directory and cache files while it decides: other checks
    cover them (the published files' identities, the entries' digests)."""
    fresh = call.out.parent / "new-out"
    recorder = quick.Recorder(call.argv)
    with quick.recording(recorder):
        fresh.mkdir()
        (fresh / "build.log").write_text("")
        call.cache.own_salt()
        assert fresh.is_dir() and (call.cache.root / "salt").exists()
    inputs = [name for name, _, _ in recorder.inputs(call.cache.root, fresh)]
    assert recorder.why_not is None
    assert not any(name.startswith((str(fresh), str(call.cache.root))) for name in inputs)


def test_reads_after_the_decision_are_not_inputs(call: Call) -> None:
    recorder = quick.Recorder(call.argv)
    with quick.recording(recorder):
        (call.root / "image.yaml").read_text()
    (call.root / "overlay" / "motd").read_text()
    assert str(call.root / "image.yaml") in recorder.seen
    assert str(call.root / "overlay" / "motd") not in recorder.seen
    assert os.stat is filestate.STAT and os.lstat is filestate.LSTAT


def test_cache_root_follows_the_options_and_the_environment(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert quick.cache_root(["build"], home) == tmp_path / ".cache" / "imagesmith"
    assert quick.cache_root(["build"], {**home, "XDG_CACHE_HOME": "/x"}) == Path("/x/imagesmith")
    assert (
        quick.cache_root(["build"], {**home, "XDG_CACHE_HOME": "rel"}) == tmp_path / ".cache" / "imagesmith"
    )
    assert quick.cache_root(["build", "--cache-dir", "/c"], home) == Path("/c")
    assert quick.cache_root(["build", "--cache-dir=/d"], home) == Path("/d")
    assert quick.cache_root(["build", "--no-cache"], home) is None
    assert quick.cache_root(["build", "--cache-remote=oci://r/x"], home) is None
    assert quick.cache_root(["build"], {**home, "IMAGESMITH_CACHE_REMOTE": "oci://r/x"}) is None


def test_only_a_build_is_answered(call: Call) -> None:
    assert call.answer(["plan", *call.argv[1:]]) == []
    assert call.answer([*call.argv, "--help"]) == []


@pytest.mark.parametrize("damage", ["not json", "fields missing", "inputs of another shape"])
def test_a_damaged_record_is_left_to_a_build(call: Call, damage: str) -> None:
    (path,) = records(call)
    record = json.loads(path.read_text())
    if damage == "not json":
        path.write_text(path.read_text()[:100])
    elif damage == "fields missing":
        path.write_text(json.dumps({key: record[key] for key in ("version", "key", "output", "inputs")}))
    else:
        path.write_text(json.dumps({**record, "inputs": [[name] for name, *_ in record["inputs"]]}))
    assert call.answer() == []
    assert not (call.out / "build.log").exists()


def test_a_package_installed_since_is_a_change(
    call: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packages = tmp_path / "site-packages"
    packages.mkdir()
    monkeypatch.setattr(sys, "path", [sys.path[0], str(packages), *sys.path[1:]])
    monkeypatch.setattr(quick, "STARTED_NS", time.time_ns())  # as if imagesmith started now
    for path in records(call):
        path.unlink()
    publish(call, decide(call))
    assert call.answer() != []
    (packages / "plugin.py").write_text("")
    assert call.answer() == []


def test_the_margin_follows_the_timestamps_granularity() -> None:
    now = 1_700_000_000_500_000_000
    fine = [1, 2, 3, now - 50_000_000, now - 50_000_000]  # changed 0.05 s before the read
    assert quick.racy(fine, now) and not quick.racy(fine, now + quick.FINE_NS)
    whole = [1, 2, 3, now - 1_500_000_000, 1_699_999_999_000_000_000]  # whole seconds: FAT, old ext
    assert quick.racy(whole, now) and not quick.racy(whole, now + quick.WHOLE_SECONDS_NS)
    assert not quick.racy(None, now) and not quick.racy([1, 2], now)  # none, or a directory looked up
