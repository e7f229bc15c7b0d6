"""Imports every module that registers ops (one line each), so `lookup` finds them."""

from __future__ import annotations

from gateway import (
    console,  # noqa: F401  # user.*, token.*, audit.verify
    custody_cmd,  # noqa: F401  # keys.custody_changed
)
from gateway.analytics import ops as _analytics_ops  # noqa: F401  # analytics.report
from gateway.backup import ops as _backup_ops  # noqa: F401  # backup.create, .verify, .restore
from gateway.contacts import ops as _contacts_ops  # noqa: F401  # contacts.import
from gateway.keys import ops as _keys  # noqa: F401
from gateway.retention import ops as retention_ops  # noqa: F401  # retention.*, erase.number
