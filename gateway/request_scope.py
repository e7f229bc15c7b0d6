"""Whether the running task is answering a request (an API call or a panel page).

The cluster's pool gives a request a short wait for a connection and answers it at once
while the shared database is known to be away (`cluster/db_breaker.py`); background work
(dispatch, the lease, the outbox) keeps the pool's own waits. The mark is the answering
task itself, not a flag: a task a request starts (a group's send, a wake-up) inherits
the context but is not that task, so it stays background work.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token

Mark = Token[asyncio.Task[object] | None]

_ANSWERING: ContextVar[asyncio.Task[object] | None] = ContextVar("answering", default=None)


def answering() -> bool:
    """True in the task that is answering a request, and only there."""
    task = _ANSWERING.get()
    return task is not None and task is asyncio.current_task()


def begin() -> Mark:
    """Mark the running task as answering a request; `end(token)` takes the mark off
    (aiohttp answers the requests of one keep-alive connection in one task)."""
    return _ANSWERING.set(asyncio.current_task())


def end(token: Mark) -> None:
    _ANSWERING.reset(token)
