"""What a long command is doing, read from its output line by line: a short summary that
``Runner`` shows on a terminal as it changes, and every few seconds otherwise.

Each reader is a small state machine over the lines a real tool prints (tested with them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol


class Progress(Protocol):
    def feed(self, line: str) -> None: ...
    def summary(self) -> str: ...


_NEWLY = re.compile(r"^\d+ upgraded, (?P<count>\d+) newly installed")
_GET = re.compile(r"^Get:\d+ \S+ \S+ \S+ (?P<name>[^\s:]+)(?::\S+)? \S+ \S+ \[")
_UNPACK = re.compile(r"^Unpacking (?P<name>[^\s:]+)")
_SETUP = re.compile(r"^Setting up (?P<name>[^\s:]+)")


@dataclass
class Apt:
    """mmdebstrap --verbose: its phases (``I:`` lines), and apt's and dpkg's per-package
    lines counted against the number of packages apt said it would install."""

    phase: str = "starting"
    total: int = 0
    downloaded: int = 0
    unpacked: int = 0
    set_up: int = 0
    current: str = ""
    step: str = ""

    def feed(self, line: str) -> None:
        if line.startswith("I: ") and line.endswith("..."):
            self.phase = line[3:].rstrip(".")
            self.step, self.current = "", ""
            return
        if found := _NEWLY.match(line):  # a new apt run: count from zero
            self.total = int(found.group("count"))
            self.downloaded = self.unpacked = self.set_up = 0
        elif found := _GET.match(line):
            self.downloaded += 1
            self.step, self.current = "downloading", found.group("name")
        elif found := _UNPACK.match(line):
            self.unpacked += 1
            self.step, self.current = "unpacking", found.group("name")
        elif found := _SETUP.match(line):
            self.set_up += 1
            self.step, self.current = "setting up", found.group("name")

    def summary(self) -> str:
        if not self.step:
            return self.phase
        done = {"downloading": self.downloaded, "unpacking": self.unpacked, "setting up": self.set_up}[
            self.step
        ]
        of = f"/{self.total}" if self.total >= done else ""
        return f"{self.phase}: {self.step} {done}{of} ({self.current})"


_RUN_PARTS = re.compile(r"^run-parts: executing \S*/(?P<name>[^/\s]+)")


@dataclass
class Steps:
    """A command that names its steps (run-parts --verbose: each hook it runs) or says
    nothing: the step it is in (``Runner`` adds how long it has run)."""

    label: str
    current: str = ""

    def feed(self, line: str) -> None:
        if found := _RUN_PARTS.match(line):
            self.current = found.group("name")

    def summary(self) -> str:
        return f"{self.label}: {self.current}" if self.current else self.label
