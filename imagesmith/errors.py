"""The one error type: a message, a hint, and where in the user's files it happened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: exit code for a bad config, layer, device or command line
EXIT_CONFIG = 2
#: exit code for a build, boot or host failure
EXIT_FAILURE = 1


@dataclass(frozen=True)
class Location:
    """A place in a file, 1-based like an editor shows it."""

    file: Path
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        parts = [str(self.file)]
        if self.line:
            parts.append(str(self.line))
            if self.column:
                parts.append(str(self.column))
        return ":".join(parts)


class ImagesmithError(Exception):
    """Everything imagesmith reports to a person goes through this type."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        location: Location | None = None,
        exit_code: int = EXIT_FAILURE,
        details: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location
        self.exit_code = exit_code
        self.details = details

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


def config_error(message: str, location: Location | None, hint: str | None = None) -> ImagesmithError:
    """An error in what the user wrote: exit code 2."""
    return ImagesmithError(message, hint=hint, location=location, exit_code=EXIT_CONFIG)
