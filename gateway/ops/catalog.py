"""Imports every module that registers ops (one line each), so `lookup` finds them."""

from __future__ import annotations

from gateway.keys import ops as _keys  # noqa: F401
