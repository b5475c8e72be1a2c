"""imagesmith: reproducible, auditable OS images for embedded devices."""

__version__ = "0.1.0"
