"""`build --check-reproducible`: the same build twice, each with its own empty stage cache.

Both builds run at once (each is mostly one emulated core) as separate imagesmith
processes; they share only the downloaded .deb files. The first publishes into the
output directory, the second into ``<output>/check-reproducible/``. Every output is
compared; for differing images the first differing partition and files are named.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from imagesmith.cache import Cache
from imagesmith.errors import ImagesmithError
from imagesmith.host.rootfs import remove_tree
from imagesmith.host.run import Runner
from imagesmith.outputs import files as artifacts
from imagesmith.repro import reprodiff

SECOND = "check-reproducible"
NOT_COMPARED = {"build.log"}


def outputs(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in directory.iterdir() if p.is_file() and p.name not in NOT_COMPARED}


def compare(runner: Runner, first: Path, second: Path) -> list[str]:
    """What differs between two output directories (empty: nothing)."""
    a, b = outputs(first), outputs(second)
    problems = [f"{name}: only in {first if name in a else second}" for name in sorted(a.keys() ^ b.keys())]
    for name in sorted(a.keys() & b.keys()):
        if artifacts.sha256(a[name]) != artifacts.sha256(b[name]):
            where = ""
            if name.endswith(".img"):
                where = ": " + reprodiff.explain(runner, a[name], b[name])
            problems.append(f"{name} differs{where}")
    return problems


def run(runner: Runner, build_args: list[str], output: Path, cache: Cache) -> None:
    second = output / SECOND
    if second.exists():
        remove_tree(second)
    output.mkdir(parents=True, exist_ok=True)
    scratch = [
        Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-check-", dir=cache.root / "tmp")) for _ in range(2)
    ]
    try:
        commands = []
        for n, (target, cache_dir) in enumerate(zip((output, second), scratch, strict=True), start=1):
            argv = [sys.executable, "-m", "imagesmith", "build", *build_args, "-o", str(target)]
            argv += ["--cache-dir", str(cache_dir / "cache"), "--shared-debs", str(cache.debs)]
            argv += ["--cache-remote", ""]  # an empty cache is empty: nothing shared either
            commands.append((argv, cache_dir / f"build-{n}.console"))
        with runner.stage("check", "two builds at once, each with an empty stage cache"):
            runner.run_together(commands, hint=f"see {output / 'build.log'} and {second / 'build.log'}")
        with runner.stage("compare", "every output of the two builds"):
            problems = compare(runner, output, second)
    finally:
        for path in scratch:
            remove_tree(path)
    if problems:
        raise ImagesmithError(
            f"not reproducible: the two builds differ in {len(problems)} output(s)",
            details="\n".join(problems),
            hint=f"the second build's outputs are kept in {second} for comparison",
        )
    remove_tree(second)
    for name, path in sorted(outputs(output).items()):
        runner.info(f"  identical: {name}  sha256 {artifacts.sha256(path)[:16]}…")
    runner.info("[green]reproducible[/green]: both builds gave identical outputs")
