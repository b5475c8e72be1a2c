"""Property: hostile values for the fields that reach a file format or a command line load
only when they are safe, and a secret value never appears in an error."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from imagesmith.config.load import load_spec
from imagesmith.errors import ImagesmithError
from imagesmith.redact import redact

SECRET_ENV = "IMAGESMITH_HOSTILE_SECRET"
NASTY = ["\n", "\r", ":", " ", "\x00", "-", "--", "/", "..", "{{ 7*7 }}", "$", "'", '"', "\t", "#", "="]
text = st.lists(st.sampled_from([*NASTY, "a", "Z", "9", "$6$", "root", "--global"]), max_size=8).map("".join)
#: (where in the config, how the value is written) → the field it lands in
FIELDS = {
    "password_hash": "users: [{{name: a, password_hash: {v}}}]",
    "unit": "services: {{mask: [{v}]}}",
    "enable": "services: {{enable: [{v}]}}",
    "cmdline": "cmdline: [{v}]",
    "config_txt": "config_txt: [{v}]",
    "shell": "users: [{{name: a, shell: {v}}}]",
    "group": "users: [{{name: a, groups: [{v}]}}]",
    "component": "distribution: {{components: [{v}]}}",
    "mirror": "distribution: {{mirror: {v}}}",
    "hostname": "hostname: {v}",
    "variable": "variables: {{site: {v}}}",
}
CASES = {"count": 0}


def check_loaded(spec: object, field: str) -> None:
    config = spec.config  # type: ignore[attr-defined]
    for user in config.users:
        if user.password_hash is not None:
            assert not set(user.password_hash) & {":", "\n", "\r", " ", "\x00"}
        assert user.shell.startswith("/") and "\n" not in user.shell
    for unit in [*config.services.enable, *config.services.mask]:
        assert not unit.startswith("-")
    for line in [*config.cmdline, *config.config_txt]:
        assert "\n" not in line and "\r" not in line


@given(field=st.sampled_from(sorted(FIELDS)), value=text, secret=st.booleans(), user=text, password=text)
def test_hostile_values_are_refused_with_a_located_error_that_keeps_secrets(
    field: str, value: str, secret: bool, user: str, password: str
) -> None:
    CASES["count"] += 1
    marker = f"S3cret-{value}-{password}".replace("\x00", "")  # an environment holds no NUL
    if field == "mirror":  # credentials in a URL are secret even when written in the file
        value = f"http://{user or 'u'}:{marker}@mirror.example/debian"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "site.yaml").write_text(
            "layer: site\nvariables: {site: {type: string, default: x, secret: true}}\n"
            "hostname: '{{ site }}-1'\n"
        )
        os.environ[SECRET_ENV] = marker
        if secret and field != "mirror":
            value = marker
        written = f"!env {SECRET_ENV}" if secret else json.dumps(value)
        path = root / "img.yaml"
        path.write_text(
            "name: x\ndevice: qemu-amd64\nlayers: [site]\n" + FIELDS[field].format(v=written) + "\n"
        )
        try:
            spec = load_spec(path)
        except ImagesmithError as exc:
            assert exc.location is not None and exc.location.file.name in ("img.yaml", "site.yaml"), exc
            assert exc.hint
            said = redact(" ".join([str(exc), exc.hint or "", exc.details or ""]))
            if secret or field == "mirror":
                assert marker not in said, said
            return
        finally:
            os.environ.pop(SECRET_ENV, None)
        check_loaded(spec, field)
        shown = json.dumps(spec.masked())
        if secret or field == "mirror":
            assert marker not in shown, shown


def test_report_cases_run() -> None:
    print(f"\nhostile-value cases: {CASES['count']}")
    assert CASES["count"] == 0 or CASES["count"] >= settings().max_examples * 5 // 6  # 500 of 600
