"""Facts derived from a spec that more than one part of imagesmith needs: the packages to
install and the archive components. They live with the config, not in a stage."""

from __future__ import annotations

from imagesmith.config.load import Spec


def packages(spec: Spec) -> list[str]:
    """Every package to install, sorted; ``name-`` asks apt to keep ``name`` out."""
    wanted: set[str] = set(spec.device.packages)
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
    wanted -= removed
    # a removal that matched nothing in any layer still keeps the package out
    return sorted(wanted) + sorted(f"{name}-" for name in removed - set(spec.device.packages))


def components(spec: Spec) -> list[str]:
    seen: list[str] = []
    for comp in [*spec.config.distribution.components, *spec.device.components]:
        if comp not in seen:
            seen.append(comp)
    return seen
