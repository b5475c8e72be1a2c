"""A build: the stage loop, lock files, publishing, and the reproducibility check."""

from imagesmith.build.locking import lock_only, read_lock, use_lock
from imagesmith.build.pipeline import BuildOptions, Result, build

__all__ = ["BuildOptions", "Result", "build", "lock_only", "read_lock", "use_lock"]
