"""What went wrong, read from a failed tool's own output: the few lines that say it, and a
hint that fits the cause (a missing host tool, an unknown package, an unreachable mirror).

Pure functions over the output lines, so each cause is tested with the text the tool
really prints. ``Runner.run`` calls the one it is given when a command fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from imagesmith.host import requirements

MAX_LINES = 12


@dataclass(frozen=True)
class Explanation:
    lines: list[str]  # the tool's own lines that say what is wrong
    hint: str


#: mmdebstrap's lines that repeat an error with the whole command line around it
_WRAPPERS = ("E: setup failed:", "E: mmdebstrap failed", "E: run_chroot failed", "E: main() received")


def _short(line: str, limit: int = 300) -> str:
    return line if len(line) <= limit else line[:limit] + " …"


def _unique(lines: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for line in lines:
        if line not in seen:
            seen.append(line)
    return seen[:MAX_LINES]


_MISSING_TOOL = (
    re.compile(r"^E: install (?P<tool>[\w.+-]+) for "),  # mmdebstrap: arch-test
    re.compile(r"^E: cannot find (?P<tool>[\w.+/-]+)$"),  # mmdebstrap: dpkg, tar, qemu-*-static …
    re.compile(r"(?P<tool>[\w.+/-]+): (?:command )?not found$"),  # sh
    re.compile(r"^\w+: failed to execute (?P<tool>[\w.+/-]+): No such file or directory$"),  # unshare, chroot
)
_UNKNOWN_PACKAGE = re.compile(r"^E: (?:Unable to locate package |Package '?)(?P<name>[^\s']+)")
_UNREACHABLE = re.compile(
    r"Temporary failure resolving|Could not resolve|Failed to fetch|Could not connect|"
    r"Connection (?:failed|timed out|refused)|Network is unreachable|No route to host"
)
_NO_SUITE = re.compile(r"does not have a Release file|Release' (?:is not signed|no longer has)")
_SIGNATURE = re.compile(r"NO_PUBKEY|signatures couldn't be verified|is not signed|EXPKEYSIG")


def _names(line: str, url: str) -> bool:
    base = url.rstrip("/")
    # apt writes a file:// URL as file:/path, and the bootstrap reads it with copy:/path
    local = base.removeprefix("file://")
    return base in line or (local != base and (f"file:{local}" in line or f"copy:{local}" in line))


def apt(
    lines: Sequence[str], mirror: str = "", suite: str = "", extra: Sequence[tuple[str, str]] = ()
) -> Explanation | None:
    """mmdebstrap's and apt's failures; ``extra``: (name, URL) of the extra apt sources."""
    for line in lines:  # a wrapper (unshare) that could not start the tool at all
        if found := _MISSING_TOOL[3].match(line.strip()):
            return missing_tool(found.group("tool"), [line.strip()])
    errors = [line.strip() for line in lines if line.strip().startswith(("E: ", "W: "))]
    for line in errors:
        for pattern in _MISSING_TOOL[:2]:
            found = pattern.match(line)
            if found:
                return missing_tool(found.group("tool"), [line])
    unknown = [m.group("name") for line in errors if (m := _UNKNOWN_PACKAGE.match(line))]
    if unknown:
        return Explanation(
            _unique([line for line in errors if _UNKNOWN_PACKAGE.match(line)]),
            f"no package named {', '.join(unknown)} in {suite or 'the suite'} on {mirror or 'the mirror'}: "
            "check the spelling in the config's or the layers' packages: lists",
        )
    if any("unmet dependencies" in line for line in lines):
        start = next(i for i, line in enumerate(lines) if "unmet dependencies" in line)
        unmet = [line.rstrip() for line in lines[start:] if line.strip() and not line.startswith(_WRAPPERS)]
        return Explanation(
            _unique(unmet),
            "these packages cannot be installed together: remove one of them from the config's or the "
            "layers' packages:, or install a version the others accept",
        )
    if any(_SIGNATURE.search(line) for line in lines):
        named = [
            name
            for name, url in extra
            # apt writes a file:// URL as file:/path
            if any(_names(line, url) for line in lines if "InRelease" in line or _SIGNATURE.search(line))
        ]
        if named:
            return Explanation(
                _unique(line.strip() for line in lines if _SIGNATURE.search(line)),
                f"the extra source {named[0]!r} is not signed by the key its `key:` file holds: check "
                "that file against the fingerprint its publisher gives (the manifest lists what it holds)",
            )
        return Explanation(
            _unique(line.strip() for line in lines if _SIGNATURE.search(line)),
            "apt could not verify the mirror's signature: install debian-archive-keyring "
            f"({requirements.install_command(['debian-archive-keyring'])}) or check distribution.mirror",
        )
    if any(_NO_SUITE.search(line) for line in lines):
        return Explanation(
            _unique(line.strip() for line in lines if _NO_SUITE.search(line)),
            f"the mirror has no suite {suite!r}: check distribution.suite and distribution.mirror",
        )
    if any(_UNREACHABLE.search(line) for line in lines):
        return Explanation(
            _unique(line.strip() for line in lines if _UNREACHABLE.search(line)),
            f"the mirror {mirror or ''} cannot be reached from this host: check the network, "
            "a proxy (http_proxy) and distribution.mirror".replace("  ", " "),
        )
    said = [_short(line) for line in errors if not line.startswith(_WRAPPERS)]
    if said:
        return Explanation(_unique(said), "apt's and mmdebstrap's whole output is in build.log")
    return None


#: what a full disk (or a used-up quota) makes a tool print
_NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded|ENOSPC")
NO_SPACE_HINT = (
    "free space there, or give the output (-o), the cache (--cache-dir) and TMPDIR a larger disk; "
    "nothing half-made was kept"
)


def no_space(lines: Sequence[str]) -> Explanation | None:
    """Any tool: the disk it writes to is full. Checked first: whatever else the tool
    says then is a consequence."""
    said = [_short(line) for line in lines if _NO_SPACE.search(line)]
    return Explanation(_unique(said), NO_SPACE_HINT) if said else None


def shell(lines: Sequence[str]) -> Explanation | None:
    """A script or hook: a command it runs is not installed."""
    for line in lines:
        found = _MISSING_TOOL[2].search(line.strip())
        if found:
            return missing_tool(found.group("tool"), [line.strip()])
    return None


def missing_tool(tool: str, lines: list[str]) -> Explanation:
    req = requirements.provider(tool)
    if req is None:
        return Explanation(lines, f"{tool} is not installed on this host")
    purpose = next((p for p in req.purposes if p in ("boot", "test")), "build")
    flags = "" if purpose == "build" else f" --for {purpose}"
    flags += "".join(f" --arch {arch}" for arch in req.arches)
    return Explanation(
        lines,
        f"{tool} is in the Debian package {req.package}: {requirements.install_command([req.package])} "
        f"(`imagesmith doctor{flags}` checks everything {purpose} needs; with sudo and --fix it installs it)",
    )
