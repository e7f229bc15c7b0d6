"""Imports every module that registers ops (one line each), so `lookup` finds them."""

from __future__ import annotations

from gateway.backup import ops as _backup_ops  # noqa: F401  # backup.create, .verify, .restore
