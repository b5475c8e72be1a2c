from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.errors import EXIT_CONFIG, ImagesmithError

from ..conftest import EXAMPLE_KEY, REPO

Write = Callable[[str, str], Path]


def error_of(path: Path) -> ImagesmithError:
    with pytest.raises(ImagesmithError) as info:
        load_spec(path)
    exc = info.value
    assert exc.exit_code == EXIT_CONFIG
    assert exc.hint, "every config error carries a hint"
    return exc


def where(exc: ImagesmithError) -> tuple[str, int, int]:
    assert exc.location is not None
    return exc.location.file.name, exc.location.line, exc.location.column


def test_default_config_loads_with_its_layers_in_order() -> None:
    spec = load_spec(None)
    assert spec.config_path == (REPO / "examples" / "minimal.yaml").resolve()
    assert spec.config.name == "minimal"
    assert spec.device.device == "pi4" and spec.device.arch == "arm64"
    assert spec.layout.layout == "simple"
    assert [ref.name for ref in spec.layers] == ["base", "networkd", "openssh"]
    assert "openssh-server" in spec.config.packages and "htop" in spec.config.packages
    assert "ssh.service" in spec.config.services.enable
    assert spec.config.users[0].ssh_authorized_keys == [EXAMPLE_KEY]
    assert spec.config.distribution.suite == "trixie"
    # overlay sources of built-in layers resolve next to the layer file
    assert any(f.source.endswith("catalog/layers/openssh") for f in spec.config.files)


def test_full_config(write: Write, tmp_path: Path) -> None:
    (tmp_path / "overlay").mkdir()
    write("keys/a.pub", EXAMPLE_KEY + "\n")
    write("setup.sh", "#!/bin/sh\n")
    path = write(
        "img.yaml",
        """
        name: full
        device: qemu-arm64
        layers: [openssh]
        packages: [curl, -less]
        hostname: box-1
        timezone: America/New_York
        locale: de_CH.UTF-8
        users:
          - name: ops
            uid: 1500
            groups: [adm]
            password_hash: "$y$j9T$abc$def"
            ssh_authorized_keys: [keys/a.pub, "ssh-ed25519 AAAAC3Nza literal"]
        files: [{source: overlay/, target: /opt/app, owner: "root:adm"}]
        scripts: [{run: setup.sh, in: host}]
        services: {enable: [ssh.service], disable: [getty@tty1.service]}
        cmdline: [quiet]
        config_txt: [dtparam=audio=on]
        """,
    )
    spec = load_spec(path)
    cfg = spec.config
    assert [r.name for r in spec.layers] == ["base", "openssh"]
    assert "less" not in cfg.packages and "curl" in cfg.packages
    assert cfg.users[0].ssh_authorized_keys == [EXAMPLE_KEY, "ssh-ed25519 AAAAC3Nza literal"]
    assert cfg.scripts[0].in_ == "host" and cfg.scripts[0].run == str(tmp_path / "setup.sh")
    assert cfg.files[-1].source == str(tmp_path / "overlay") and cfg.files[-1].owner == "root:adm"
    assert cfg.cmdline == ["quiet"] and cfg.config_txt == ["dtparam=audio=on"]


ERRORS = [
    # (config text, (line, column), message part, hint part)
    ("name: x\ndevice: pi44\n", (2, 9), "unknown device 'pi44'", "did you mean 'pi4'"),
    ("name: x\ndevice: pi4\nlayers: [base, opensh]\n", (3, 16), "unknown layer 'opensh'", "'openssh'"),
    ("name: x\ndevice: pi4\nlayout: fancy\n", (3, 9), "unknown layout 'fancy'", "simple"),
    ("name: x\ndevice: pi4\nhostnme: a\n", (3, 10), "unknown key 'hostnme'", "did you mean 'hostname'"),
    ("name: x\ndevice: [pi4\n", (3, 1), "YAML syntax error", "YAML syntax"),
    ("name: x\n  device: pi4\n", (2, 9), "YAML syntax error", "YAML syntax"),
    ("name: x\nname: y\ndevice: pi4\n", (2, 1), "duplicate key", "once"),
    ("name: x\ndevice: pi4\nhostname: 12\n", (3, 11), "hostname", "schema"),
    ("name: x\ndevice: pi4\nusers: nobody\n", (3, 8), "users", "schema"),
    ("name: x\ndevice: pi4\nusers:\n  - groups: [sudo]\n", (4, 5), "users[0].name is required", "name:"),
    (
        "name: x\ndevice: pi4\nusers:\n  - name: a\n    password: secret\n",
        (5, 15),
        "unknown key 'password'",
        "password_hash",
    ),
    ("name: x\ndevice: pi4\nusers:\n  - name: a\n    password_hash: hunter2\n", (5, 20), "crypt", "schema"),
    ("name: x\ndevice: pi4\nfiles: [{source: nothere/}]\n", (3, 18), "overlay source not found", "relative"),
    ("name: x\ndevice: pi4\nscripts: [{run: nothere.sh}]\n", (3, 17), "script not found", "relative"),
    (
        "name: x\ndevice: pi4\nusers: [{name: a, ssh_authorized_keys: [k.pub]}]\n",
        (3, 41),
        "SSH public key file",
        "relative",
    ),
    ("name: x\ndevice: pi4\nscripts: [{run: /bin/true, in: vm}]\n", (3, 32), "scripts[0].in", "schema"),
    ("name: x\ndevice: pi4\npackages: [Bad_Name]\n", (3, 12), "packages[0]", "schema"),
    ("device: pi4\n", (1, 1), "name is required", "name:"),
    ("- just\n- a list\n", (1, 1), "must be a map", "name:"),
    ("layer: mine\n", (1, 8), "is a layer", "layers:"),
]


@pytest.mark.parametrize(("text", "pos", "message", "hint"), ERRORS)
def test_errors_are_located_with_a_hint(
    write: Write, text: str, pos: tuple[int, int], message: str, hint: str
) -> None:
    exc = error_of(write("img.yaml", text))
    assert where(exc) == ("img.yaml", *pos)
    assert message in exc.message
    assert exc.hint is not None and hint in exc.hint


def test_missing_config_file(tmp_path: Path) -> None:
    exc = error_of(tmp_path / "nope.yaml")
    assert "file not found" in exc.message


def test_private_key_is_refused(write: Write) -> None:
    write("id", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    exc = error_of(write("img.yaml", "name: x\ndevice: pi4\nusers: [{name: a, ssh_authorized_keys: [id]}]\n"))
    assert "does not look like an SSH public key" in exc.message
    assert ".pub" in (exc.hint or "")


def test_user_layer_in_config_directory_and_cycle(write: Write) -> None:
    write("one.yaml", "layer: one\nrequires: [two]\npackages: [curl]\n")
    write("two.yaml", "layer: two\nrequires: [one]\n")
    exc = error_of(write("img.yaml", "name: x\ndevice: pi4\nlayers: [one]\n"))
    assert "cycle" in exc.message and "one.yaml" in exc.message and "two.yaml" in exc.message
    assert where(exc) == ("two.yaml", 2, 12)


def test_user_layer_is_found_and_relative_paths_follow_it(write: Write, tmp_path: Path) -> None:
    (tmp_path / "mine" / "etc").mkdir(parents=True)
    write("mine.yaml", "layer: mine\nrequires: [base]\nfiles: [{source: mine/}]\npackages: [curl]\n")
    spec = load_spec(write("img.yaml", "name: x\ndevice: pi4\nlayers: [mine]\n"))
    assert [r.name for r in spec.layers] == ["base", "mine"]
    assert spec.layers[1].path == tmp_path / "mine.yaml"
    assert spec.config.files[-1].source == str(tmp_path / "mine")


def test_layer_file_must_name_itself(write: Write) -> None:
    write("other.yaml", "layer: something-else\n")
    exc = error_of(write("img.yaml", "name: x\ndevice: pi4\nlayers: [other]\n"))
    assert "is not the layer 'other'" in exc.message
    assert where(exc) == ("other.yaml", 1, 8)


def test_duplicate_user_is_an_error(write: Write) -> None:
    from imagesmith.stages.customize import check_spec

    spec = load_spec(write("img.yaml", "name: x\ndevice: pi4\nusers: [{name: a}, {name: a, uid: 1001}]\n"))
    with pytest.raises(ImagesmithError) as info:
        check_spec(spec)
    assert "listed twice" in info.value.message


@pytest.mark.parametrize(
    ("line", "pos", "message"),
    [
        ("timezone: Mars/Olympus_Mons", (3, 11), "unknown time zone 'Mars/Olympus_Mons'"),
        ("locale: xx_YY.UTF-8", (3, 9), "unknown locale 'xx_YY.UTF-8'"),
    ],
)
def test_time_zone_and_locale_are_checked_before_building(
    write: Write, line: str, pos: tuple[int, int], message: str
) -> None:
    from imagesmith.stages.customize import check_spec

    spec = load_spec(write("img.yaml", f"name: x\ndevice: pi4\n{line}\n"))
    with pytest.raises(ImagesmithError) as info:
        check_spec(spec)
    assert info.value.exit_code == EXIT_CONFIG and message in info.value.message
    assert where(info.value) == ("img.yaml", *pos)


def test_two_providers_of_one_capability(write: Write) -> None:
    write("ntp-a.yaml", "layer: ntp-a\nprovides: [time-sync]\n")
    write("ntp-b.yaml", "layer: ntp-b\nprovides: [time-sync]\n")
    exc = error_of(write("img.yaml", "name: x\ndevice: pi4\nlayers: [ntp-a, ntp-b]\n"))
    assert "both provide 'time-sync'" in exc.message
    assert "ntp-a.yaml" in exc.message and "ntp-b.yaml" in exc.message
    assert where(exc) == ("ntp-b.yaml", 2, 12)


def test_conflicting_layers_by_name_and_capability(write: Write) -> None:
    write("nm.yaml", "layer: nm\nprovides: [net-x]\nconflicts: [networkd]\n")
    exc = error_of(write("img.yaml", "name: x\ndevice: pi4\nlayers: [networkd, nm]\n"))
    assert "layer nm" in exc.message and "conflicts with 'networkd'" in exc.message
    assert "networkd.yaml" in exc.message and where(exc) == ("nm.yaml", 3, 13)
    write("other.yaml", "layer: other\nconflicts: [net-x]\n")
    exc = error_of(write("img2.yaml", "name: x\ndevice: pi4\nlayers: [nm, other]\n"))
    assert "which layer nm" in exc.message


def test_missing_required_layer_names_the_requiring_file(write: Write) -> None:
    write("app.yaml", "layer: app\nrequires: [nonesuch]\n")
    exc = error_of(write("img.yaml", "name: x\ndevice: pi4\nlayers: [app]\n"))
    assert "unknown layer 'nonesuch'" in exc.message and where(exc) == ("app.yaml", 2, 12)


def test_layer_paths_in_the_config(write: Write, tmp_path: Path) -> None:
    write("shared/layers/extra.yaml", "layer: extra\npackages: [strace]\n")
    path = write("proj/img.yaml", "name: x\ndevice: pi4\nlayer_paths: [../shared/layers]\nlayers: [extra]\n")
    spec = load_spec(path)
    assert spec.layers[0].path == tmp_path / "shared/layers/extra.yaml" and "strace" in spec.config.packages
    exc = error_of(write("proj/bad.yaml", "name: x\ndevice: pi4\nlayer_paths: [nowhere]\n"))
    assert "layer directory not found" in exc.message and where(exc) == ("bad.yaml", 3, 15)


def test_including_a_file_that_is_not_a_config_is_reported_at_the_include(write: Write) -> None:
    write("keys/admin.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq3l4me test\n")
    exc = error_of(write("img.yaml", "name: x\ndevice: pi4\nincludes: [keys/admin.pub]\n"))
    assert "admin.pub is not a config file" in exc.message and where(exc) == ("img.yaml", 3, 12)


def test_a_path_naming_an_unknown_users_home_is_a_located_error(write: Write) -> None:
    path = write("a.yaml", "name: a\ndevice: pi4\nincludes: ['~no-such-user-0/x.yaml']\n")
    with pytest.raises(ImagesmithError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}:3:")
    assert "no such user" in str(caught.value)
