"""`build`, `lock` and `plan`: the commands that make (or foresee) a build."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from imagesmith import quick
from imagesmith.build import BuildOptions
from imagesmith.build import build as run_build
from imagesmith.cache import Cache
from imagesmith.cli.app import (
    Remote,
    cache_option,
    config_argument,
    err_console,
    handled,
    load,
    main,
    open_cache,
    remote_options,
    spec_options,
    verbose_option,
)
from imagesmith.config.load import Spec
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.host import overlay
from imagesmith.host.run import Runner, format_duration
from imagesmith.outputs import bundle, manifest, report
from imagesmith.redact import redact
from imagesmith.stages import plan
from imagesmith.stages.pipeline import NAMES


@main.command()
@click.argument("configs", nargs=-1, type=click.Path(path_type=Path, resolve_path=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, resolve_path=True, file_okay=False),
    help="Directory for the outputs (default: out/<name>/; with several configs: OUTPUT/<name>/).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    help="With several configs: how many build at a time (default: one per two cores).",
)
@click.option(
    "--signing-key",
    type=click.Path(path_type=Path, resolve_path=True, dir_okay=False),
    help="Ed25519 private key (PEM) that signs SHA256SUMS (overrides the config's signing_key).",
)
@click.option("--no-cache", is_flag=True, help="Run every stage; read and write no cache.")
@click.option(
    "--rebuild-from",
    type=click.Choice(NAMES),
    help="Run this stage and every later one even if the cache has them.",
)
@click.option(
    "--update-lock", is_flag=True, help="Resolve the packages afresh and rewrite CONFIG.lock, then build."
)
@click.option(
    "--check-reproducible",
    is_flag=True,
    help="Build twice, each with its own empty stage cache, and report the first difference.",
)
@click.option(
    "--compress",
    type=click.Choice(["xz", "zstd", "gzip", "none"]),
    help="Also write the image compressed (over the config's publish.compress).",
)
@click.option(
    "--shared-debs", type=click.Path(path_type=Path, resolve_path=True, file_okay=False), hidden=True
)
@cache_option
@remote_options
@spec_options
@verbose_option
@handled
def build(
    configs: tuple[Path, ...],
    output: Path | None,
    jobs: int | None,
    signing_key: Path | None,
    no_cache: bool,
    rebuild_from: str | None,
    update_lock: bool,
    check_reproducible: bool,
    compress: str | None,
    shared_debs: Path | None,
    cache_dir: Path | None,
    cache_remote: str | None,
    cache_key: Path | None,
    cache_trust: tuple[Path, ...],
    layers: tuple[Path, ...],
    sets: tuple[str, ...],
    variant: str | None,
    verbose: bool,
) -> None:
    """Build the image described by each CONFIG (default: the built-in examples/minimal.yaml).

    When CONFIG.lock exists (see `imagesmith lock`), the build installs exactly its
    package versions. Several configs build at once (-j), each stage they share made once."""
    from imagesmith.repro import lock

    if len(configs) > 1:
        if check_reproducible:
            raise ImagesmithError(
                "--check-reproducible checks one config at a time",
                hint="run it once per config",
                exit_code=EXIT_CONFIG,
            )
        passed = [*(f"--layers={d}" for d in layers), *(f"--set={s}" for s in sets)]
        passed += [f"--variant={variant}"] if variant else []
        passed += [f"--signing-key={signing_key}"] if signing_key else []
        passed += ["--no-cache"] if no_cache else []
        passed += [f"--rebuild-from={rebuild_from}"] if rebuild_from else []
        passed += ["--update-lock"] if update_lock else []
        passed += [f"--compress={compress}"] if compress else []
        passed += [f"--cache-dir={cache_dir}"] if cache_dir else []
        passed += [f"--cache-remote={cache_remote}"] if cache_remote else []
        passed += [f"--cache-key={cache_key}"] if cache_key else []
        passed += [f"--cache-trust={path}" for path in cache_trust]
        passed += ["--verbose"] if verbose else []
        build_many(configs, output, jobs, layers, sets, variant, passed)
        return
    config = configs[0] if configs else None
    if compress is not None:  # as the last --set: over the config and the layers
        sets = (*sets, f"publish.compress={compress}")
    answerable = not (check_reproducible or no_cache or rebuild_from or update_lock or cache_remote)
    recorder = quick.recorder() if answerable else None
    with quick.recording(recorder):  # what deciding what to make reads, for the next call
        spec = load(config, layers, sets, variant)
        out = output or Path.cwd() / "out" / spec.config.name  # every path is absolute from here on
        lock_file = lock.path_for(spec.config_path, variant)
        if check_reproducible:
            from imagesmith.build import check, lock_only

            runner = Runner(verbose=verbose)
            shared = open_cache(cache_dir)
            if update_lock:
                lock_only(spec, runner, None if no_cache else shared, lock_file)
            args = [*([str(config)] if config else []), *(f"--layers={d}" for d in layers)]
            args += [*(f"--set={s}" for s in sets), *([f"--variant={variant}"] if variant else [])]
            args += [f"--signing-key={signing_key}"] if signing_key else []
            check.run(runner, args, out, shared)
            return
        config_id = plan.config_id(spec, variant, list(sets))
        decided = recorder.stop if recorder is not None else None
        options = BuildOptions(
            out, signing_key, rebuild_from, config_id, lock_file, update_lock, given_epoch(), decided
        )
        with exclusive(out):
            remote = Remote(cache_remote, cache_key, cache_trust)
            store = None if no_cache else open_cache(cache_dir, shared_debs, remote)
            if store is not None:  # cached trees used in place, mounted where only this build sees them
                overlay.private_namespace()
            run_one_build(spec, options, store, verbose, recorder)


def build_many(
    configs: tuple[Path, ...],
    output: Path | None,
    jobs: int | None,
    layers: tuple[Path, ...],
    sets: tuple[str, ...],
    variant: str | None,
    options: list[str],
) -> None:
    """Every config checked first (a bad one stops all before anything runs), then built
    by its own `imagesmith build`, ``jobs`` at a time."""
    from imagesmith.build import many

    planned: dict[str, many.Job] = {}
    for config in configs:
        spec = load(config, layers, sets, variant)
        name = spec.config.name
        if name in planned:
            raise ImagesmithError(
                f"{config} and {planned[name].config} are both named {name}: their outputs would mix",
                hint="give each config its own `name:`, or build them one at a time with their own -o",
                exit_code=EXIT_CONFIG,
            )
        out = (output or Path.cwd() / "out") / name
        argv = [sys.executable, "-m", "imagesmith", "build", str(config), f"--output={out}", *options]
        planned[name] = many.Job(name, config, out, argv)
    many.run(Runner(), list(planned.values()), jobs or many.default_jobs())


def given_epoch() -> int | None:
    """SOURCE_DATE_EPOCH from the environment: read here once, then carried by the build."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ImagesmithError(
            f"SOURCE_DATE_EPOCH={value[:40]!r} is not a time in seconds since 1970",
            hint="set it to a whole number (e.g. `date +%s`), or unset it",
            exit_code=EXIT_CONFIG,
        )
    return int(value)


def run_one_build(
    spec: Spec, options: BuildOptions, store: Cache | None, verbose: bool, recorder: quick.Recorder | None
) -> None:
    """One build, logged to build.log in its output directory; with ``recorder``, the
    record that lets the same call answer from it next time (``quick.py``)."""
    runner = Runner(verbose=verbose, log_path=options.output / "build.log")
    try:
        head = (
            f"building [bold]{spec.config.name}[/bold] for {spec.device.device} "
            f"({spec.device.arch}), layout {spec.layout.layout}, from {spec.config_path}"
        )
        layers = f"layers: {', '.join(ref.name for ref in spec.layers)}"
        runner.info(head)
        runner.log(layers)
        result = run_build(spec, options, runner, store)
        total = sum(t for _, t in runner.timings)
        runner.info(f"[green]done[/green] in {format_duration(total)}: {result.image}")
        summary = [f"  {path}" for path in result.outputs]
        summary += [f"  {line}" for line in report.sizes(manifest.read(options.output))]
        summary += [f"  {bundle.how_to_install(p)}" for p in result.outputs if p.name.endswith(bundle.SUFFIX)]
        for line in summary:
            runner.info(line)
        if recorder is not None and store is not None and result.key:
            replay = {
                "notes": [redact(f"note: {note}") for note in spec.notes],
                "head": plain(head),
                "layers": redact(layers),
                "image": str(result.image),
                "summary": [plain(line) for line in summary],
                "entries": [[name, stage["key"]] for name, stage in result.stages.items()],
                "config": str(spec.config_path),
                "config_id": options.config_id,
                "stages": result.stages,
            }
            recorder.save(store.root, store.own_salt(), options.output, result.key, replay)
    except ImagesmithError as exc:
        runner.log(f"error: {exc}\n{exc.details or ''}\nhint: {exc.hint or ''}")
        raise
    finally:
        runner.close()


def plain(line: str) -> str:
    """A line as the log has it: no markup, no secret."""
    return redact(Text.from_markup(line).plain)


@main.command("lock")
@config_argument
@click.option("--no-cache", is_flag=True, help="Keep no bootstrap in the stage cache.")
@cache_option
@spec_options
@verbose_option
@handled
def lock_command(
    config: Path,
    no_cache: bool,
    cache_dir: Path | None,
    layers: tuple[Path, ...],
    sets: tuple[str, ...],
    variant: str | None,
    verbose: bool,
) -> None:
    """Resolve CONFIG's packages on its mirror now and write CONFIG.lock.

    The lock holds every package's exact version and .deb sha256, the suite, the mirror
    (and snapshot timestamp) and SOURCE_DATE_EPOCH. It runs a fresh bootstrap, which is
    kept in the cache: the next build starts from it."""
    from imagesmith.build import lock_only
    from imagesmith.repro import lock

    spec = load(config, layers, sets, variant)
    runner = Runner(verbose=verbose)
    store = None if no_cache else open_cache(cache_dir)
    lock_only(spec, runner, store, lock.path_for(spec.config_path, variant))


@contextmanager
def exclusive(output: Path) -> Iterator[None]:
    """One build at a time writes into ``output``: a second one waits for the first (and
    says so), so outputs and build.log are never a mix of two builds. The lock is on the
    directory itself (flock), so it leaves no file among the outputs."""
    output.mkdir(parents=True, exist_ok=True)
    fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err_console.print(f"waiting: another build is writing to {output} …")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


@main.command("plan")
@click.argument("config", required=False, type=click.Path(path_type=Path, resolve_path=True, dir_okay=False))
@cache_option
@spec_options
@handled
def plan_command(
    config: Path | None,
    cache_dir: Path | None,
    layers: tuple[Path, ...],
    sets: tuple[str, ...],
    variant: str | None,
) -> None:
    """Show each stage of a build of CONFIG: from the cache, or run, and why."""
    from imagesmith.build import read_lock
    from imagesmith.outputs import manifest
    from imagesmith.repro import lock

    spec = load(config, layers, sets, variant)
    store = open_cache(cache_dir)
    last = store.last_build(plan.config_id(spec, variant, list(sets)))
    table = Table("stage", "key", "will", "because")
    lock_file = lock.path_for(spec.config_path, variant)
    locked = read_lock(spec, Runner(), lock_file) if lock_file.exists() else None
    plans = plan.stages(spec, store.salt, manifest.host_tools(), locked, given_epoch())
    restored = plan.restore_point(plans, lambda p: store.lookup(p.name, p.key) is not None)
    for index, stage in enumerate(plans):
        before = last.get(stage.name, {}).get("inputs", {})
        changed = plan.changed_inputs(stage.inputs, before)
        if index <= restored:
            why = ""
        elif store.lookup(stage.name, stage.key) is not None:
            why = "in the cache, but its entry alone does not restore the stages after it"
        elif changed and before:
            why = "changed: " + ", ".join(changed)
        else:
            why = changed[0] if changed else "not in the cache (pruned, or built with --no-cache)"
        table.add_row(stage.name, stage.key[:12], "come from the cache" if index <= restored else "run", why)
    Console(soft_wrap=True).print(table)
