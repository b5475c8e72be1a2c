"""The quick no-op: a build called as the last one into the same output directory, with
nothing it read changed since, says "up to date" before anything else of imagesmith loads.

Deciding that a build has nothing to do (``build/current.py``) takes loading the config,
the catalog and the overlays and keying every stage: a third of a second, most of it
importing the libraries that do it. A build that took that decision with a ``Recorder``
on (it published, or found its outputs current) leaves a record of its *call* in the
cache's ``published/``: named by an HMAC, with the cache's own salt, of the command line,
the working directory and the whole environment (no secret in clear), it holds the
identity (``filestate.identity``) of everything the decision read: every file opened,
every directory listed, every path looked up (there or not; a directory looked up through
is only which one it is), every Python module loaded, and the host's package database
(dpkg-query, the one program the decision runs, reads it). The next call with the same
digest checks those identities, then, under the output directory's lock, the published
files' (``current.py``'s record) and, when all hold, does what an up-to-date build does:
counts the stages' cache entries as used, writes the config's build record and build.log,
prints what was published.

No record is kept when the decision read what identities cannot vouch for: another
program's answer, the network, a file changed during the build, or one changed so
shortly before it was read that a second change within the filesystem's timestamp
granularity could go unseen ("racily clean", as git says).

The standard library only: this module runs before anything else is imported.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagesmith.filestate import (
    IDENTITY,
    LSTAT,
    STAT,
    identity,
    identity_of,
    mark_used,
    published_name,
    write_json,
)

#: the record format: a record of another one is not read
VERSION = 1
#: set in a build re-run in a user namespace (``host/userns.py``): not part of the call
USERNS_MARK = "IMAGESMITH_USERNS"
#: when this process started: a module changed since may not be what was loaded
STARTED_NS = time.time_ns()
#: the stage line of an answer from a record (``stages_run`` in tests reads "▶ outputs:")
LABEL = "outputs: up to date: nothing the last build into this directory read has changed"
#: what dpkg-query reads: the host tools' versions enter the release key through it
DPKG = ("/var/lib/dpkg/status", "/var/lib/dpkg/updates")
#: how long after a change a file's identity vouches for what was read: longer than a
#: kernel clock tick (fine timestamps), or than FAT's two seconds (whole seconds)
FINE_NS, WHOLE_SECONDS_NS = 100_000_000, 2_000_000_000
#: reads of these say nothing about the build's inputs
IGNORED = ("/proc/", "/sys/", "/dev/")
#: events after which identities no longer vouch for what the decision read
UNTRACKED = {
    "os.system": "a shell command",
    "os.exec": "another program",
    "os.posix_spawn": "another program",
    "os.spawn": "another program",
    "os.fork": "another process",
    "os.forkpty": "another process",
    "socket.connect": "the network",
    "socket.getaddrinfo": "the network",
    "socket.sendto": "the network",
}


def state(path: str, whole: bool = True) -> list[int] | None:
    """What identifies ``path`` now: its target's identity, and the link's own if it is one
    (a dangling link is not nothing). Not ``whole``, a directory is only which one it is:
    looking a path up through it says nothing of what else it holds."""
    try:
        info = STAT(path)
        found = identity_of(info) if whole or not stat.S_ISDIR(info.st_mode) else [info.st_dev, info.st_ino]
    except OSError:
        found = None
    try:
        own = LSTAT(path)
    except OSError:
        return found
    if not stat.S_ISLNK(own.st_mode):
        return found
    return [*(found or [-1]), own.st_ino, own.st_ctime_ns]


def racy(found: list[int] | None, now_ns: int) -> bool:
    """Changed so shortly before ``now_ns`` that another change in the same timestamp could
    leave the identity as it is: 0.1 s for fine timestamps, 2 s for whole seconds (FAT)."""
    if found is None or len(found) < len(IDENTITY):
        return False
    mtime, ctime = found[3], found[4]
    margin = WHOLE_SECONDS_NS if ctime % 1_000_000_000 == 0 else FINE_NS
    return max(mtime, ctime) + margin > now_ns


def call_digest(salt: bytes, argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    """What names a call's record: its command line, directory and environment, keyed."""
    called = {name: value for name, value in env.items() if name != USERNS_MARK}
    text = json.dumps([VERSION, list(argv), cwd, sorted(called.items())])
    return hmac.new(salt, text.encode("utf-8", "surrogateescape"), "sha256").hexdigest()


def cache_root(argv: Sequence[str], env: Mapping[str, str]) -> Path | None:
    """The local cache a ``build`` command line uses (as its options say); None if it uses
    none, or one shared with others (whose build always pushes)."""
    root = None
    for index, arg in enumerate(argv):
        if arg == "--no-cache" or arg.startswith("--cache-remote"):
            return None
        if arg == "--cache-dir" and index + 1 < len(argv):
            root = argv[index + 1]
        elif arg.startswith("--cache-dir="):
            root = arg.removeprefix("--cache-dir=")
    if env.get("IMAGESMITH_CACHE_REMOTE"):
        return None
    if root is not None:
        return Path(os.path.realpath(root))
    base = env.get("XDG_CACHE_HOME") or ""
    home = env.get("HOME") or os.path.expanduser("~")  # as Path.home() finds it
    return (Path(base) if os.path.isabs(base) else Path(home) / ".cache") / "imagesmith"


def record_path(root: Path, digest: str) -> Path:
    return root / "published" / f"call-{digest}.json"


def holds(inputs: Sequence[Sequence[Any]]) -> bool:
    """Every input of a record (path, identity, whole) is as recorded."""
    return all(state(path, whole) == recorded for path, recorded, whole in inputs)


def answer(argv: Sequence[str], env: Mapping[str, str], err: Callable[[str], None]) -> bool:
    """Answer the call ``argv`` from its record when everything it names holds: True when
    answered (lines given to ``err``); False for a build to decide."""
    if not argv or argv[0] != "build" or any(arg in ("-h", "--help") for arg in argv):
        return False
    root = cache_root(argv, env)
    if root is None:
        return False
    try:
        salt = (root / "salt").read_bytes()
        digest = call_digest(salt, argv, os.getcwd(), env)
        record = json.loads(record_path(root, digest).read_text(encoding="utf-8"))
        if record.get("version") != VERSION or not holds(record["inputs"]):
            return False
        output = Path(record["output"])
        lock = os.open(output, os.O_RDONLY | os.O_DIRECTORY)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another build writes there: it decides
            published = json.loads((root / "published" / published_name(output)).read_text("utf-8"))
            if published.get("key") != record["key"] or not published.get("files"):
                return False
            if any(identity(output / name) != found for name, found in published["files"].items()):
                return False
            shown = [*record["notes"], record["head"], f"▶ {LABEL}", f"✓ {'outputs':<12} {'0.0s':>8}"]
            shown += [f"done in 0.0s: {record['image']}", *record["summary"]]
            replay(root, output, record)
        except (OSError, ValueError, KeyError, TypeError):
            return False
    finally:
        os.close(lock)
    for line in shown:
        err(str(line))
    return True


def replay(root: Path, output: Path, record: dict[str, Any]) -> None:
    """What an up-to-date build does besides printing (``build.pipeline.unchanged``)."""
    now = time.time()
    for stage, key in record["entries"]:
        meta_path = root / "entries" / f"{stage}-{key}" / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # pruned meanwhile: a build would not find it either
        mark_used(meta, record["config"], now)
        write_json(meta_path, meta, root / "tmp")
    write_json(root / "builds" / f"{record['config_id']}.json", record["stages"])
    log = [record["head"], record["layers"], f"==> {LABEL}", "<== outputs done in 0.0s"]
    log += [f"done in 0.0s: {record['image']}", *record["summary"]]
    (output / "build.log").write_text("".join(f"{line}\n" for line in log), encoding="utf-8")


#: the command line this process was called with, when it came in through ``main``
_called: list[str] | None = None
_hooked = False


def main() -> None:
    """The ``imagesmith`` command: answered here when it can be, else by the command line."""
    global _called
    _called = sys.argv[1:]
    env = os.environ
    if USERNS_MARK not in env and answer(_called, env, lambda line: print(line, file=sys.stderr)):
        sys.exit(0)
    from imagesmith.cli import main as command_line

    command_line()


@contextmanager
def recording(recorder: Recorder | None) -> Iterator[None]:
    """``recorder`` on (if any) until its build decides what to make, or ends."""
    if recorder is not None:
        recorder.start()
    try:
        yield
    finally:
        if recorder is not None:
            recorder.stop()


def recorder() -> Recorder | None:
    """A recorder of this call, if it came in through ``main`` (so that it can be answered)."""
    return None if _called is None else Recorder(_called)


class Recorder:
    """Watches what a build reads until it has decided what to make (``stop``), then
    keeps the record of its call (``save``) if every identity vouches for what it read."""

    active: Recorder | None = None  # audit hooks cannot be removed: the one hook asks this

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv, self.cwd, self.env = list(argv), os.getcwd(), dict(os.environ if env is None else env)
        #: path: (identity, whole, when it was read)
        self.seen: dict[str, tuple[list[int] | None, bool, int]] = {}
        self.why_not: str | None = None  # set: no record is kept

    def start(self) -> None:
        global _hooked
        if not _hooked:
            sys.addaudithook(_hook)
            _hooked = True
        Recorder.active = self
        real_stat, real_lstat = STAT, LSTAT

        def recorded_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            if Recorder.active is self:
                self.read(path, whole=False)
            return real_stat(path, *args, **kwargs)

        def recorded_lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            if Recorder.active is self:
                self.read(path, whole=False)
            return real_lstat(path, *args, **kwargs)

        os.stat, os.lstat = recorded_stat, recorded_lstat  # what Path.exists and os.path use

    def stop(self) -> None:
        """The decision is taken: later reads are the build's, not the decision's."""
        if Recorder.active is self:
            Recorder.active = None
            os.stat, os.lstat = STAT, LSTAT

    def untracked(self, why: str) -> None:
        self.why_not = self.why_not or why

    def read(self, path: object, whole: bool = True) -> None:
        """``path`` was opened or listed (``whole``), or looked up: its identity before that
        is kept."""
        if isinstance(path, int):  # a descriptor: opened by a call seen before
            return
        try:
            name = os.path.abspath(os.fsdecode(path))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.untracked("a path of an unknown kind")
            return
        if name.startswith(IGNORED) or "/__pycache__/" in name:
            return
        if name in self.seen and (self.seen[name][1] or not whole):
            return
        self.seen[name] = (state(name, whole), whole, time.time_ns())

    def save(self, root: Path, salt: bytes, output: Path, key: str, replay: dict[str, Any]) -> None:
        """Keep the record of this call, if it vouches for the decision; records of other
        calls into the same output directory go."""
        self.stop()
        inputs = self.inputs(root, output)
        if self.why_not is not None:
            return
        digest = call_digest(salt, self.argv, self.cwd, self.env)
        record = {"version": VERSION, "key": key, "output": str(output), "inputs": inputs, **replay}
        for other in (root / "published").glob("call-*.json"):
            try:
                if json.loads(other.read_text(encoding="utf-8")).get("output") == str(output):
                    other.unlink()
            except (OSError, ValueError):
                continue
        write_json(record_path(root, digest), record, root / "tmp")

    def inputs(self, root: Path, output: Path) -> list[list[Any]]:
        """Every identity the record vouches with: what was read (still as it was when read),
        the modules loaded (unchanged since this process started), the interpreter, and the
        directories modules are imported from (a package installed since could be loaded:
        a plugin, found by entry points read before the recorder started)."""
        modules = {sys.executable, *(os.path.abspath(d) for d in sys.path[1:] if os.path.isdir(d))}
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if isinstance(file, str):
                modules.add(os.path.abspath(file))
        pairs: list[list[Any]] = []
        for name, (found, whole, read_ns) in sorted(self.seen.items()):
            if name in modules or Path(name).is_relative_to(root) or Path(name).is_relative_to(output):
                continue  # the cache and the outputs are checked by other means
            if racy(found, read_ns):
                self.untracked(f"{name} changed just before it was read")
            elif state(name, whole) != found:
                self.untracked(f"{name} changed during the build")
            pairs.append([name, found, whole])
        for name in sorted(modules):
            found = state(name)
            if racy(found, STARTED_NS):
                self.untracked(f"{name} changed after imagesmith started")
            pairs.append([name, found, True])
        return pairs


def _hook(event: str, args: tuple[Any, ...]) -> None:
    recorder = Recorder.active
    if recorder is None:
        return
    if event == "open":
        recorder.read(args[0])
    elif event in ("os.listdir", "os.scandir"):
        recorder.read("." if args[0] is None else args[0])  # no path: the working directory
    elif event == "subprocess.Popen":
        program = _program(args[0], args[1])
        if program == "dpkg-query":  # its answer is the package database's
            for path in DPKG:
                recorder.read(path)
        else:
            recorder.untracked(f"the program {program!r}")
    elif event in UNTRACKED:
        recorder.untracked(UNTRACKED[event])


def _program(executable: object, argv: object) -> str:
    """The name of the program a subprocess.Popen event runs."""
    if executable is None and isinstance(argv, list | tuple) and argv:
        executable = argv[0]
    elif executable is None:
        executable = argv
    if isinstance(executable, str | bytes | os.PathLike):
        text = os.fsdecode(executable)
        return os.path.basename(text.split()[0] if text.strip() else text)
    return "?"
