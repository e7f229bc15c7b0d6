"""Idempotency-Key answers as the store interface passes them (`queue_store.py`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredIdempotent:
    """The answer kept under an Idempotency-Key, and the request it answered."""

    request_hash: bytes
    status: int
    response: bytes


@dataclass(frozen=True, slots=True)
class IdempotentAnswer:
    """An answer to keep under an Idempotency-Key, committed with its messages."""

    token_id: str
    key_hash: bytes
    request_hash: bytes
    status: int
    response: bytes
    at: float  # when it was answered, on the gateway's clock (pruned by it)
