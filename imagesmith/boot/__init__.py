"""Booting a built image in qemu and watching its console."""
