"""Facts derived from a spec that more than one part of imagesmith needs: the packages to
install and the archive components. They live with the config, not in a stage."""

from __future__ import annotations

from imagesmith.config.load import Spec


def device_packages(spec: Spec) -> list[str]:
    """What the device needs: its own packages and those of the kernel chosen."""
    return [*spec.device.packages, *spec.kernel.packages]


def packages(spec: Spec) -> list[str]:
    """Every package to install, sorted; ``name-`` asks apt to keep ``name`` out."""
    device = device_packages(spec)
    wanted: set[str] = set(device)
    removed: set[str] = set()
    for name in spec.config.packages:
        if name.startswith("-"):
            removed.add(name[1:])
        else:
            wanted.add(name)
    if any(user.sudo for user in spec.config.users):
        wanted.add("sudo")
    if spec.config.locale != "C.UTF-8":
        wanted.add("locales")
    if spec.layout.data is not None:  # what stages/storage.py's initramfs script runs
        wanted.update(("busybox", "e2fsprogs", "fdisk"))
    if spec.layout.role("boot-a") is not None:  # imagesmith-tryboot reads autoboot.txt with mtools
        wanted.add("mtools")
    if spec.config.update is not None:  # RAUC and its D-Bus service (stages/update.py)
        wanted.update(("rauc", "rauc-service"))
    if boots_through_uboot(spec) and spec.device.uboot is not None:  # stages/uboot.py
        wanted.update((spec.device.uboot.package, "libubootenv-tool"))
    wanted -= removed
    # a removal that matched nothing in any layer still keeps the package out
    return sorted(wanted) + sorted(f"{name}-" for name in removed - set(device))


def layer_packages(spec: Spec) -> set[str]:
    """The names the device's catalog entry and the layers ask for: the bootstrap stage's."""
    named = set(device_packages(spec))
    layer_files = {ref.path.resolve() for ref in spec.layers}
    listed = spec.tree.get("packages")
    for item in listed.value if listed is not None and isinstance(listed.value, list) else []:
        if isinstance(item.value, str) and item.location.file.resolve() in layer_files:
            named.add(item.value)
    return named


def base_packages(spec: Spec) -> list[str]:
    """What the bootstrap stage installs: ``packages`` without the config's own
    (``own_packages``). Every removal (``name-``) is here: a package the config takes away
    from a layer is never installed, rather than installed and removed."""
    own = set(own_packages(spec))
    return [name for name in packages(spec) if name not in own]


def own_packages(spec: Spec) -> list[str]:
    """What the packages stage adds over the bootstrap: the packages no layer and not the
    device names (the config's own list, and those its settings need: sudo, locales, …)."""
    layered = layer_packages(spec)
    return [name for name in packages(spec) if not name.endswith("-") and name not in layered]


def boots_through_uboot(spec: Spec) -> bool:
    """Does the image boot through U-Boot's A/B boot counter (``stages/uboot.py``)? Update
    bundles on A/B root slots that share one boot partition (layouts ab and ab-gpt)."""
    layout = spec.layout
    return spec.config.update is not None and layout.slotted and layout.role("boot-a") is None


def components(spec: Spec) -> list[str]:
    seen: list[str] = []
    for comp in [*spec.config.distribution.components, *spec.device.components]:
        if comp not in seen:
            seen.append(comp)
    return seen


def languages(locale: str) -> list[str]:
    """The message catalogues a locale reads: en_GB.UTF-8 → en_GB, en (none for C or POSIX)."""
    name = locale.split(".")[0].split("@")[0]
    if name in ("C", "POSIX"):
        return []
    return [name, name.split("_")[0]] if "_" in name else [name]


def kernel_arguments(spec: Spec) -> list[str]:
    """What the config adds to the kernel's command line: its own ``cmdline`` and what
    ``slim`` asks of the kernel."""
    return [*spec.config.cmdline, *(["transparent_hugepage=never"] if spec.config.slim.huge_pages else [])]


def dpkg_filters(spec: Spec) -> list[str]:
    """dpkg's path-exclude/path-include lines for ``slim`` (empty: nothing left out).
    Copyright files always stay: the SBOMs' licences are read from them."""
    slim, found = spec.config.slim, []
    if slim.docs:
        found += [
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright",
            "path-exclude=/usr/share/man/*",
            "path-exclude=/usr/share/info/*",
        ]
    if slim.locales:
        found += ["path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias"]
        found += [f"path-include=/usr/share/locale/{lang}/*" for lang in languages(spec.config.locale)]
    return found


def update_compatible(spec: Spec) -> str:
    """RAUC's compatible string of the image and its bundles: the config's, else NAME-DEVICE."""
    update = spec.config.update
    assert update is not None
    return update.compatible or f"{spec.config.name}-{spec.device.device}"
