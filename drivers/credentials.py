"""Secrets for drivers: from a file, a systemd credential, or (demos only) inline."""

from __future__ import annotations

import os
from pathlib import Path


class SecretError(ValueError):
    """A configured secret could not be read; the message names where, never the value."""


def read_secret(
    *, file: str | None = None, credential: str | None = None, value: str | None = None
) -> str | None:
    """The first configured source wins: a systemd credential, a file, then a value.

    `credential` names a file in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    Trailing newlines are stripped; None when nothing is configured.
    """
    if credential is not None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(f"credential {credential!r}: $CREDENTIALS_DIRECTORY is not set")
        return _read(Path(directory) / credential)
    if file is not None:
        return _read(Path(file).expanduser())
    return value


def _read(path: Path) -> str:
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as e:
        raise SecretError(f"cannot read secret file {path}: {e.strerror}") from None
