"""The `imagesmith` command line: one module per command group over the group in ``app``."""

from imagesmith.cli import audit, build, cache, config, host  # noqa: F401  (they register their commands)
from imagesmith.cli.app import main

__all__ = ["main"]
