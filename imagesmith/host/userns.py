"""Builds without root: the command runs again as root of its own user namespace.

Inside, uid 0 is the user who ran it (so every output and cache file stays theirs) and
uids 1…65536 are their subordinate range from /etc/subuid (same for groups): the image's
system users own their files, as in a build by root. newuidmap/newgidmap (package
uidmap) write the mapping; nothing else needs privileges. mmdebstrap, chroot, mke2fs
and cp then run as (namespaced) root: ownership, modes and setuid bits come out the same
as in a build by root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner

CLONE_NEWUSER = 0x10000000
#: set in the re-executed command: it is already inside
MARK = "IMAGESMITH_USERNS"
#: ids a Debian system uses: 0…65534 (nobody/nogroup)
NEEDED = 65536


@dataclass(frozen=True)
class Range:
    start: int
    count: int


def subordinate(path: Path, user: str, uid: int) -> list[Range]:
    """The user's ranges in /etc/subuid or /etc/subgid (by name or number)."""
    found = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)) and fields[1].isdigit() and fields[2].isdigit():
            found.append(Range(int(fields[1]), int(fields[2])))
    return found


def usable(ranges: list[Range]) -> Range | None:
    return next((r for r in ranges if r.count >= NEEDED), None)


def inside() -> bool:
    return os.environ.get(MARK) == "1"


def _fail(what: str) -> ImagesmithError:
    return ImagesmithError(
        f"cannot build as an ordinary user here: {what}",
        hint="run `imagesmith doctor` for the fix; as root, `imagesmith doctor --fix --user NAME` applies it",
    )


def reexec(argv: list[str]) -> NoReturn:
    """Run ``argv`` as root of a new user namespace and exit with its status."""
    uid, gid = os.getuid(), os.getgid()
    user = pwd.getpwuid(uid).pw_name
    uids = usable(subordinate(Path("/etc/subuid"), user, uid))
    gids = usable(subordinate(Path("/etc/subgid"), user, uid))
    if uids is None or gids is None:
        raise _fail(f"{user} has no range of {NEEDED} subordinate ids in /etc/subuid and /etc/subgid")
    ready_r, ready_w = os.pipe()  # child → parent: unshared
    go_r, go_w = os.pipe()  # parent → child: mapped (closed without a byte: failed)
    pid = os.fork()
    if pid == 0:  # the child: one thread, so unshare(CLONE_NEWUSER) is allowed
        os.close(ready_r)
        os.close(go_w)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER) != 0:
            os.write(2, f"error: unshare(CLONE_NEWUSER): {os.strerror(ctypes.get_errno())}\n".encode())
            os._exit(126)
        os.write(ready_w, b"1")
        os.close(ready_w)
        if os.read(go_r, 1) != b"1":
            os._exit(126)
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.environ[MARK] = "1"
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"error: cannot run {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127)
    os.close(ready_w)
    os.close(go_r)
    unshared = os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    problem: ImagesmithError | None = None if unshared else _fail("the kernel refused a new user namespace")
    try:
        if unshared:
            runner = Runner()
            for tool, own, sub in (("newuidmap", uid, uids), ("newgidmap", gid, gids)):
                runner.run(
                    [tool, str(pid), "0", str(own), "1", "1", str(sub.start), str(NEEDED)],
                    capture=True,
                    hint="run `imagesmith doctor`: it checks the uidmap package and the id ranges",
                )
            os.write(go_w, b"1")
    except ImagesmithError as exc:
        problem = exc
    finally:
        os.close(go_w)  # without the byte, the child gives up

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if problem is not None:
        raise problem
    sys.exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 128 + os.WTERMSIG(status))
