"""A real OCI registry for the tests: Debian's docker-registry on 127.0.0.1, its own port
and storage, no Docker."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Registry:
    url: str  # oci+http://127.0.0.1:PORT/REPO
    storage: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def blobs(self) -> list[Path]:
        """The stored blob files (their content, as the registry serves it)."""
        return sorted(self.storage.glob("docker/registry/v2/blobs/sha256/*/*/data"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(where: Path, repository: str = "team/imagesmith-cache") -> Iterator[Registry]:
    program = shutil.which("docker-registry")
    assert program, "docker-registry is not installed: `./dev test` installs the test suite's packages"
    port = free_port()
    storage = where / "storage"
    storage.mkdir(parents=True)
    config = where / "config.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = open(where / "registry.log", "wb")  # noqa: SIM115 - open while it runs
    process = subprocess.Popen([program, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    registry = Registry(f"oci+http://127.0.0.1:{port}/{repository}", storage, process)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"docker-registry did not start: {(where / 'registry.log').read_text()}")
        yield registry
    finally:
        if process.poll() is None:
            registry.stop()
        log.close()
