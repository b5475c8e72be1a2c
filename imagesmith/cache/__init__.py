"""Stage keys (plan), tree digests, and the content-addressed stage cache."""

from imagesmith.cache.store import CONTENT, META, Cache, Entry, default_dir

__all__ = ["CONTENT", "META", "Cache", "Entry", "default_dir"]
