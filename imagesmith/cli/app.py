"""The `imagesmith` command group: options shared by commands, errors turned into messages
and exit codes (``handled``), and the re-run in a user namespace."""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.shell_completion import CompletionItem
from rich.console import Console
from rich.markup import escape

from imagesmith import __version__
from imagesmith.config.load import Spec, load_spec
from imagesmith.errors import EXIT_FAILURE, ImagesmithError, Location
from imagesmith.host.diagnose import NO_SPACE_HINT
from imagesmith.redact import redact

if TYPE_CHECKING:
    from imagesmith.cache import Cache

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def report(exc: ImagesmithError) -> None:
    """An error for people: message, the lines that explain it, a hint; no secret in any."""
    err_console.print(f"[bold red]error:[/bold red] {escape(redact(str(exc)))}")
    if exc.details:
        for line in redact(exc.details).splitlines():
            err_console.print(f"  [dim]│[/dim] {escape(line)}")
    if exc.hint:
        err_console.print(f"  [bold]hint:[/bold] {escape(redact(exc.hint))}")


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def handled(func: F) -> F:
    """Every command: ImagesmithError → message + exit code; no traceback for people."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return func(*args, **kwargs)
        except ImagesmithError as exc:
            report(exc)
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # e.g. `imagesmith config show | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/bold red]: nothing half-made was kept")
            sys.exit(130)
        except Exception as exc:  # a bug: say so plainly, show the trace only on request
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                where = f" ({exc.filename})" if exc.filename else ""
                report(
                    ImagesmithError(
                        f"no space left on a disk the build writes to{where}",
                        hint=NO_SPACE_HINT,
                    )
                )
                sys.exit(EXIT_FAILURE)
            err_console.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(redact(str(exc)))}"
            )
            if kwargs.get("verbose"):
                err_console.print(escape(redact(traceback.format_exc())))
            else:
                err_console.print(
                    "  [bold]hint:[/bold] run again with --verbose for the traceback and report it"
                )
            sys.exit(EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


verbose_option = click.option("-v", "--verbose", is_flag=True, help="Show every command run and its output.")
layers_option = click.option(
    "--layers",
    "layers",
    multiple=True,
    type=click.Path(path_type=Path, resolve_path=True, file_okay=False, exists=True),
    help="Another directory of layers, searched after the config's own (repeatable).",
)
config_argument = click.argument("config", type=click.Path(path_type=Path, resolve_path=True, dir_okay=False))


#: --set KEY= whose values are catalog names, completed from the catalog
NAMED = {"device": "devices", "layout": "layouts"}


def complete_set(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of --set: the keys device= and layout=, then the catalog's names."""
    from imagesmith.config import catalog

    key, sep, value = incomplete.partition("=")
    if not sep:
        return [CompletionItem(f"{name}=") for name in NAMED if name.startswith(key)]
    if key not in NAMED:
        return []
    return [CompletionItem(f"{key}={name}") for name in catalog.names(NAMED[key]) if name.startswith(value)]


def complete_layer(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    from imagesmith.config import catalog

    return [CompletionItem(name) for name in catalog.names("layers") if name.startswith(incomplete)]


def spec_options(func: F) -> F:
    """--layers, --variant and --set: everything that changes what a config means."""
    func = click.option(
        "--set",
        "sets",
        multiple=True,
        shell_complete=complete_set,
        metavar="KEY=VALUE",
        help="Set a value over everything else, e.g. --set hostname=kiosk-1 (repeatable; VALUE is YAML).",
    )(func)
    func = click.option(
        "--variant",
        metavar="NAME",
        help="Add <config>.NAME.yaml (next to the config) over the config.",
    )(func)
    return layers_option(func)


def default_cache_dir() -> Path:
    from imagesmith.cache import default_dir

    return default_dir()


def open_cache(cache_dir: Path | None, debs: Path | None = None, remote: Remote | None = None) -> Cache:
    """The stage cache of --cache-dir, else the user's; with the shared cache of
    ``remote`` behind it when one is given; its keys with the team's salt, if set."""
    from imagesmith.cache import Cache
    from imagesmith.cache.share import open_shared, team_salt

    cache = Cache(cache_dir or default_cache_dir(), debs, salt=team_salt())
    if remote is not None and remote.address:
        from imagesmith.outputs import sign

        signer = sign.load_private_key(remote.key) if remote.key else None
        trusted = [sign.load_public_key(path) for path in remote.trust]
        cache.remote = open_shared(remote.address, signer, trusted)
    return cache


@dataclass(frozen=True)
class Remote:
    """The shared cache options: --cache-remote, --cache-key, --cache-trust."""

    address: str | None
    key: Path | None
    trust: tuple[Path, ...]


def remote_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--cache-remote, --cache-key and --cache-trust (or their environment variables)."""
    path = click.Path(path_type=Path, resolve_path=True, dir_okay=False)
    func = click.option(
        "--cache-trust",
        multiple=True,
        type=path,
        envvar="IMAGESMITH_CACHE_TRUST",
        metavar="PUBKEY",
        help="Take shared entries signed by this Ed25519 public key (repeatable; "
        "$IMAGESMITH_CACHE_TRUST: paths separated by spaces).",
    )(func)
    func = click.option(
        "--cache-key",
        type=path,
        envvar="IMAGESMITH_CACHE_KEY",
        metavar="KEY",
        help="Sign what this build pushes to the shared cache with this Ed25519 private key "
        "(its public key is trusted too; without one, the build only pulls).",
    )(func)
    return click.option(
        "--cache-remote",
        envvar="IMAGESMITH_CACHE_REMOTE",
        metavar="oci://HOST/REPO",
        help="A shared stage cache in an OCI registry, behind the local one: pulled from on a "
        "miss, pushed to after the build (oci+http:// for a registry without TLS).",
    )(func)


def cache_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--cache-dir",
        type=click.Path(path_type=Path, resolve_path=True, file_okay=False),
        help="The stage cache (default: $XDG_CACHE_HOME/imagesmith, else ~/.cache/imagesmith).",
    )(func)


def load(config: Path | None, layers: tuple[Path, ...], sets: tuple[str, ...], variant: str | None) -> Spec:
    spec = load_spec(config, list(layers), sets=list(sets), variant=variant)
    for note in spec.notes:
        err_console.print(f"[yellow]note:[/yellow] {escape(note)}")
    return spec


#: commands that make or delete root filesystem trees: an ordinary user runs them as
#: root of a user namespace (see userns.py)
AS_ROOT = {"build", "lock", "prune", "clear"}


def as_root_of_a_user_namespace(command: str | None) -> None:
    """Run this command line again in a user namespace, when it is one that needs it."""
    from imagesmith.host import userns

    wants_help = any(arg in ("-h", "--help") for arg in sys.argv[1:])
    if command in AS_ROOT and os.geteuid() != 0 and not userns.inside() and not wants_help:
        try:
            userns.reexec([sys.executable, "-m", "imagesmith", *sys.argv[1:]])
        except ImagesmithError as exc:
            report(exc)
            sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imagesmith")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Build reproducible, auditable OS images for embedded devices from a YAML config."""
    as_root_of_a_user_namespace(ctx.invoked_subcommand)


def _me() -> str:
    """How to call this imagesmith again (with sudo, PATH may not find the virtual environment's)."""
    import shutil

    found = shutil.which("imagesmith")
    argv0 = Path(sys.argv[0])
    if argv0.name == "imagesmith" and argv0.exists():
        return str(argv0.absolute())
    return found or f"{sys.executable} -m imagesmith"


def format_duration_ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _shown(path: Path) -> str:
    """A path as people want to read it: relative to here when it is below here."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _place(where: Location) -> str:
    return f"{_shown(where.file)}:{where.line}:{where.column}" if where.line else str(where.file)
