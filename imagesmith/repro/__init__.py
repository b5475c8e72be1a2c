"""Reproducibility: SOURCE_DATE_EPOCH, lock files, the mirror's index, and finding differences."""
