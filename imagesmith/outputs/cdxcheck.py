"""The CycloneDX validator in a process of its own: ``python -m imagesmith.outputs.cdxcheck``
loads the validator first, then reads one document on its standard input. Exit 0: the
document is valid; 1: it is not, and why is on standard output.

Loading the validator takes about a second of one core (jsonschema's IRI checker compiles
its grammars when imported). A build starts this process while the filesystems are made
(``sbom.CycloneDx.prepare``), so that second is spent on its other core; in a thread of
the build it held the interpreter's lock while the build walked the root tree, and made
that walk several times slower."""

from __future__ import annotations

import sys

from imagesmith.outputs.sbom import cyclonedx_problem, load_cyclonedx_validator


def main() -> int:
    load_cyclonedx_validator()
    problem = cyclonedx_problem(sys.stdin.read())
    if problem is None:
        return 0
    print(problem)
    return 1


if __name__ == "__main__":
    sys.exit(main())
