"""Errors that reach the user as a clear one-line message (exit code 2), never as a traceback."""

from __future__ import annotations


class HsrlError(Exception):
    """Base class for every error the CLI reports without a traceback."""

    exit_code = 2


class InputError(HsrlError):
    """Bad input data: names the file, the row (1-based line or record), the field and what was expected."""

    def __init__(
        self,
        file: str | None,
        message: str,
        *,
        row: int | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.field = field
        self.expected = expected
        self.detail = message
        parts = []
        if file is not None:
            parts.append(str(file))
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field '{field}'")
        where = ", ".join(parts)
        text = f"{where}: {message}" if where else message
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)


class ConfigError(HsrlError):
    """A configuration file or override that does not fit the typed config."""


class ArtifactError(HsrlError):
    """A missing, corrupt or mismatched artefact in a run directory (checkpoint, index, dataset)."""
