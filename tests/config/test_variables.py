from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.errors import EXIT_CONFIG, ImagesmithError

Write = Callable[[str, str], Path]

LAYER = """
layer: site
variables:
  site: {type: string, required: true, description: the site code}
  country: {type: enum, values: [CH, DE, GB], default: GB}
  debug: {type: bool, default: false}
  port: {type: int, default: 8080}
  cache: {type: size, default: 64MiB}
  serial: {type: regex, pattern: "[A-Z]{2}[0-9]{4}", default: AB0001}
hostname: "{{ site | lower }}-{{ country | lower }}"
cmdline: ["port={{ port }}", "{% if debug %}debug{% else %}quiet{% endif %}"]
"""


def error(path: Path, **kwargs: object) -> ImagesmithError:
    with pytest.raises(ImagesmithError) as info:
        load_spec(path, **kwargs)  # type: ignore[arg-type]
    assert info.value.exit_code == EXIT_CONFIG and info.value.hint
    return info.value


def test_defaults_values_and_templates(write: Write) -> None:
    write("site.yaml", LAYER)
    spec = load_spec(write("img.yaml", "name: x\ndevice: pi4\nlayers: [site]\nvariables: {site: ZRH}\n"))
    assert spec.config.hostname == "zrh-gb"
    assert spec.config.cmdline == ["port=8080", "quiet"]
    assert spec.config.variables == {
        "site": "ZRH",
        "country": "GB",
        "debug": False,
        "port": 8080,
        "cache": 64 * 2**20,
        "serial": "AB0001",
    }
    spec = load_spec(
        write("img2.yaml", "name: x\ndevice: pi4\nlayers: [site]\nvariables: {site: BER, country: DE}\n"),
        sets=["variables.debug=true", "variables.cache=1GiB"],
    )
    assert spec.config.hostname == "ber-de" and spec.config.cmdline == ["port=8080", "debug"]
    assert spec.config.variables["cache"] == 2**30


@pytest.mark.parametrize(
    ("values", "message", "pos"),
    [
        ("{site: ZRH, country: FR}", "variable country must be one of CH, DE, GB, not 'FR'", (4, 33)),
        ("{site: ZRH, debug: yes please}", "variable debug must be true or false", (4, 31)),
        ("{site: ZRH, port: '80'}", "variable port must be a whole number", (4, 30)),
        ("{site: ZRH, serial: abc}", "variable serial must be text matching", (4, 32)),
        ("{site: ZRH, colour: red}", "unknown variable 'colour'", (4, 32)),
    ],
)
def test_bad_values_are_located(write: Write, values: str, message: str, pos: tuple[int, int]) -> None:
    write("site.yaml", LAYER)
    exc = error(write("img.yaml", f"name: x\ndevice: pi4\nlayers: [site]\nvariables: {values}\n"))
    assert message in exc.message
    assert exc.location is not None and (exc.location.line, exc.location.column) == pos


def test_required_variable_and_undefined_name(write: Write) -> None:
    write("site.yaml", LAYER)
    exc = error(write("img.yaml", "name: x\ndevice: pi4\nlayers: [site]\n"))
    assert "variable site is required" in exc.message and "the site code" in (exc.hint or "")
    assert exc.location is not None and exc.location.file.name == "site.yaml"
    exc = error(
        write(
            "img2.yaml", "name: x\ndevice: pi4\nlayers: [site]\nvariables: {site: A}\nlocale: '{{ lang }}'\n"
        )
    )
    assert "'lang' is undefined" in exc.message
    assert exc.location is not None and (exc.location.file.name, exc.location.line) == ("img2.yaml", 5)
    assert "site" in (exc.hint or "")


def test_template_syntax_error_and_no_shell(write: Write) -> None:
    exc = error(write("img.yaml", "name: x\ndevice: pi4\nhostname: '{{ oops'\n"))
    assert "template error" in exc.message and exc.location is not None and exc.location.line == 3
    # shell syntax is just text: nothing is ever evaluated by a shell
    spec = load_spec(write("img2.yaml", "name: x\ndevice: pi4\ncmdline: ['$(reboot)', '`id`']\n"))
    assert spec.config.cmdline == ["$(reboot)", "`id`"]
    # the sandbox refuses Python internals
    exc = error(write("img3.yaml", "name: x\ndevice: pi4\ncmdline: ['{{ \"\".__class__.__mro__ }}']\n"))
    assert "template" in exc.message


def test_bad_declarations(write: Write) -> None:
    write("l.yaml", "layer: l\nvariables:\n  a: {type: colour}\n")
    exc = error(write("img.yaml", "name: x\ndevice: pi4\nlayers: [l]\n"))
    assert (
        "unknown type 'colour'" in exc.message
        and exc.location is not None
        and exc.location.file.name == "l.yaml"
    )
    write("m.yaml", "layer: m\nvariables:\n  a: {type: int, default: many}\n")
    exc = error(write("img2.yaml", "name: x\ndevice: pi4\nlayers: [m]\n"))
    assert "variable a must be a whole number" in exc.message
