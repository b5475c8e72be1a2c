"""`config show/explain`, `schema`, `layers` and `devices`: configs as imagesmith reads them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from imagesmith.cli.app import (
    _place,
    _shown,
    complete_layer,
    config_argument,
    handled,
    layers_option,
    load,
    main,
    spec_options,
)
from imagesmith.config import catalog
from imagesmith.config.load import SECRET
from imagesmith.config.model import Device, Kernel
from imagesmith.config.nodes import load_yaml
from imagesmith.errors import ImagesmithError


def update_methods(device: Device, kernel: Kernel) -> list[str]:
    """Which A/B layouts can take update bundles on ``device`` with ``kernel``, and how."""
    found = []
    if device.uboot is not None:
        found.append("ab, ab-gpt (U-Boot)")
    if kernel.tryboot:
        found.append("ab-tryboot")
    return found


@main.command()
@handled
def devices() -> None:
    """List the devices imagesmith knows, each kernel it can run and what that kernel gives."""
    from imagesmith.config.validate import validate

    table = Table(show_lines=True)
    for heading in ("device", "arch", "kernel"):
        table.add_column(heading, no_wrap=True)
    for heading in ("A/B updates", "gives", "lacks", "notes"):
        table.add_column(heading, overflow="fold")  # a narrow terminal wraps, never cuts, what a device says
    for name in catalog.names("devices"):
        path = catalog.find("devices", name)
        assert path is not None
        dev = validate(Device, load_yaml(path), f"device {name}")
        for index, (kernel_name, kernel) in enumerate(dev.kernels.items()):
            first = index == 0
            table.add_row(
                dev.device if first else "",
                dev.arch if first else "",
                f"{kernel_name} (default)" if first else kernel_name,
                "; ".join(update_methods(dev, kernel)) or "none",
                "; ".join(kernel.gives),
                "; ".join(kernel.lacks),
                f"{dev.description}. {dev.notes}".strip() if first else "",
            )
    Console().print(table)


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL: commands, options, devices, layouts and
    layer names. For bash: `eval "$(imagesmith completion bash)"` in ~/.bashrc."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "imagesmith", "_IMAGESMITH_COMPLETE").source())


@main.group()
def config() -> None:
    """Look at a config as imagesmith sees it: merged, validated, and where each value came from."""


@config.command("show")
@config_argument
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@handled
def config_show(
    config: Path, layers: tuple[Path, ...], sets: tuple[str, ...], variant: str | None, as_json: bool
) -> None:
    """Print the fully merged config, defaults included."""

    from ruamel.yaml import YAML

    spec = load(config, layers, sets, variant)
    data = spec.masked()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(
        f"# {_shown(spec.config_path)} merged over layers: "
        + ", ".join(f"{ref.name} ({_shown(ref.path)})" for ref in spec.layers)
    )
    yaml = YAML()  # round-trip: keys stay in the order of the schema
    yaml.dump(data, sys.stdout)


@config.command("explain")
@config_argument
@click.argument("key")
@spec_options
@handled
def config_explain(
    config: Path, key: str, layers: tuple[Path, ...], sets: tuple[str, ...], variant: str | None
) -> None:
    """Print the final value of KEY (e.g. hostname, distribution.suite, users[0].name)
    and every file:line that set or changed it, in order."""

    from imagesmith.config.load import find_node, parse_key

    spec = load(config, layers, sets, variant)
    path = parse_key(key)
    value: Any = spec.masked()
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            raise ImagesmithError(
                f"{key!r} is not a setting of this config",
                exit_code=2,
                hint="see `imagesmith config show` for the keys and `imagesmith schema` for all of them",
            ) from None
    click.echo(f"{key} = {json.dumps(value)}")
    node = find_node(spec.tree, path)
    if node is None:
        click.echo("  (the default: no file sets it)")
        return
    places = [*node.history, node.location]
    for index, where in enumerate(places):
        verb = "set" if index == 0 else "changed"
        click.echo(f"  {_place(where)}: {verb}")
    if isinstance(node.value, list):
        for item in node.value:
            shown = SECRET if item.secrets() else json.dumps(item.plain())
            click.echo(f"    {shown}  ← {_place(item.location)}")


@main.command()
@click.option("--layer", is_flag=True, help="The schema of layer files instead of image configs.")
@handled
def schema(layer: bool) -> None:
    """Print the JSON Schema of image configs (or of layer files) for editors."""

    from imagesmith.config.model import ImageConfig, LayerFile

    model = LayerFile if layer else ImageConfig
    data = model.model_json_schema(by_alias=True)
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    data["title"] = "imagesmith layer" if layer else "imagesmith image config"
    click.echo(json.dumps(data, indent=2))


@main.group("layers")
def layers_group() -> None:
    """The layers imagesmith can find."""


def _layer_dirs(extra: tuple[Path, ...]) -> list[Path]:
    return [Path.cwd(), *extra]


@layers_group.command("list")
@layers_option
@handled
def layers_list(layers: tuple[Path, ...]) -> None:
    """List layers: this directory's, --layers directories', then the built-in ones."""
    table = Table("layer", "description", "file")
    for name in catalog.names("layers", _layer_dirs(layers)):
        path = catalog.find("layers", name, _layer_dirs(layers))
        assert path is not None
        doc = load_yaml(path).plain()
        table.add_row(name, str(doc.get("description", "")), _shown(path))
    Console(soft_wrap=True).print(table)


@layers_group.command("show")
@click.argument("name", shell_complete=complete_layer)
@layers_option
@handled
def layers_show(name: str, layers: tuple[Path, ...]) -> None:
    """Describe one layer: what it adds, requires and declares, and where its file is."""
    from imagesmith.config.validate import check_layer

    search = _layer_dirs(layers)
    path = catalog.find("layers", name, search)
    if path is None:
        raise ImagesmithError(
            f"unknown layer {name!r}",
            exit_code=2,
            hint=catalog.suggestion(name, catalog.names("layers", search)),
        )
    tree = load_yaml(path)
    check_layer(tree, f"layer {name}")  # templated values are only judged once rendered
    layer = tree.plain()
    click.echo(f"{layer['layer']}: {layer.get('description', '')}".rstrip(": "))
    click.echo(f"  file: {_shown(path)}")
    builtin = catalog.builtin_dir("layers") / f"{name}.yaml"
    if builtin.exists() and builtin.resolve() != path.resolve():
        click.echo(f"  overrides the built-in layer {_shown(builtin)}")
    services = layer.get("services") or {}
    for label, items in (
        ("requires", layer.get("requires")),
        ("provides", layer.get("provides")),
        ("conflicts", layer.get("conflicts")),
        ("packages", layer.get("packages")),
        ("enables", services.get("enable")),
        ("masks", services.get("mask")),
    ):
        if items:
            click.echo(f"  {label}: {', '.join(map(str, items))}")
    for entry in layer.get("files") or []:
        what = entry.get("source") or "(text)"
        mode = f" (mode {entry['mode']})" if entry.get("mode") else ""
        click.echo(f"  files: {what} → {entry.get('target', '/')}{mode}")
    for var, decl in (layer.get("variables") or {}).items():
        kind = decl.get("type", "string")
        if kind == "enum":
            values = decl.get("values") or []
            kind += f": {', '.join(map(str, values))}" if len(values) <= 8 else f": {len(values)} values"
        default = "required" if decl.get("required") else f"default {json.dumps(decl.get('default'))}"
        secret = ", secret" if decl.get("secret") else ""
        click.echo(
            f"  variable {var} ({kind}, {default}{secret}): {decl.get('description', '')}".rstrip(": ")
        )
