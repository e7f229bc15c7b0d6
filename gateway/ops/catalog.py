"""Imports every module that registers ops (one line each), so `lookup` finds them."""

from __future__ import annotations

from gateway.retention import ops as retention_ops  # noqa: F401  # retention.*, erase.number
