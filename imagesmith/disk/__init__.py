"""Disk layouts: partition tables (dos, gpt) and what each partition type means."""
