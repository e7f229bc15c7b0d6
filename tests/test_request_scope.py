"""Which task answers a request: the cluster's pool gives that one short waits, and the
tasks it starts (a group's send, a wake-up) stay background work (`request_scope.py`)."""

from __future__ import annotations

import asyncio

from gateway import request_scope


async def _answering() -> bool:
    return request_scope.answering()


async def test_only_the_answering_task_is_answering_not_the_tasks_it_starts() -> None:
    assert not request_scope.answering()
    mark = request_scope.begin()
    try:
        assert request_scope.answering()
        started = asyncio.create_task(_answering())
        assert not await started  # inherits the context, but is not the answering task
    finally:
        request_scope.end(mark)
    assert not request_scope.answering()


async def test_requests_answered_one_after_another_in_one_task_are_each_marked() -> None:
    for _ in range(2):  # aiohttp answers a keep-alive connection's requests in one task
        mark = request_scope.begin()
        assert request_scope.answering()
        request_scope.end(mark)
        assert not request_scope.answering()


async def test_a_kannel_sendsms_request_is_answered_as_a_request() -> None:
    """The Kannel-compatible listener's requests get the same short waits as the API's."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.integrations.kannel_server import kannel_middleware

    async def probe(request: web.Request) -> web.Response:
        return web.Response(text=str(request_scope.answering()))

    app = web.Application(middlewares=[kannel_middleware])
    app.router.add_get("/probe", probe)
    async with TestClient(TestServer(app)) as client:
        answers = [await (await client.get("/probe")).text() for _ in range(2)]
    assert answers == ["True", "True"]
    assert not request_scope.answering()
