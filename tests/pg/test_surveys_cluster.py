"""Issue 18: SMS surveys shared by the nodes of a cluster.

Two gateways on one PostgreSQL: a survey saved and sent on A is answered through B
(the reply reaches B's bind): the answer is recorded once, the next question is sent
once, both in the shared tables; the results and a time-out read and close the same
sessions on either node, each session closed once when both nodes' loops run at once.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.errors import ApiError
from gateway.store import crypto
from gateway.store.store import Store
from gateway.surveys.usecase import Target
from tests.pg.test_consent_cluster import _cluster_config
from tests.survey_rows import ADMIN, OTHER, WHO, make_survey
from tests.test_consent_inbound import SHORT_CODE


@pytest.fixture
async def pair(tmp_path: Path, clock: FakeClock, pg_dsn: str) -> AsyncIterator[list[Gateway]]:
    """Two nodes sharing one keyring (dispatch off: nothing leaves for a carrier)."""
    opened: list[Gateway] = []
    first = tmp_path / "gw1"
    try:
        for name in ("gw1", "gw2"):
            if name == "gw1":
                config = _cluster_config(first, name, pg_dsn)
                crypto.generate_master_key(config.master_key_path)
                store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
                await store.open()
                await store.close()
            else:
                shutil.copytree(first, tmp_path / name)
                config = _cluster_config(tmp_path / name, name, pg_dsn)
            gw = await Gateway.open(config, clock)
            opened.append(gw)
            await gw.start(dispatch=False)
        yield opened
    finally:
        for gw in opened:
            if not gw.stopped:
                await gw.stop()


async def _rows(gw: Gateway, query: str, params: Sequence[Any] = ()) -> list[Any]:
    assert gw.cluster is not None
    async with gw.cluster.queue.pool.connection() as conn:
        return list(await (await conn.execute(query.encode(), params)).fetchall())


async def _asked(gw: Gateway, who: str = WHO) -> list[str]:
    """The survey's texts to `who` in the shared queue, oldest first."""
    assert gw.cluster is not None
    cipher = gw.cluster.queue.cipher
    rows = await _rows(
        gw,
        "SELECT id, body_ct FROM messages WHERE to_index = %s AND category = 'survey'"
        " ORDER BY created_at, id",
        (gw.store.blind_index(who),),
    )
    return [cipher.decrypt(bytes(r[1]), r[0], "body") for r in rows]


async def _session(gw: Gateway, session_id: str) -> tuple[str, int]:
    [(state, question)] = await _rows(
        gw, "SELECT state, question FROM survey_sessions WHERE id = %s", (session_id,)
    )
    return state, question


async def test_a_survey_sent_from_one_node_is_answered_through_the_other(
    pair: list[Gateway], clock: FakeClock
) -> None:
    a, b = pair
    survey_id = await make_survey(a)
    assert [s.id for s in await b.surveys.list_surveys(ADMIN)] == [survey_id]
    sent = await a.surveys.send(ADMIN, survey_id, Target(to=WHO))
    assert sent.session_id is not None and sent.status == "queued"
    assert len(await _asked(a)) == 1  # the intro with the first question

    # A number answering a survey cannot be sent another one, from either node.
    with pytest.raises(ApiError) as refused:
        await b.surveys.send(ADMIN, survey_id, Target(to=WHO))
    assert refused.value.code == "survey_open"

    clock.advance(5)
    await b.sink.inbound("main", InboundSms(WHO, "1", SHORT_CODE))
    assert await _session(a, sent.session_id) == ("open", 1)
    answers = await _rows(
        a,
        "SELECT question, valid, value FROM survey_answers WHERE session_id = %s",
        (sent.session_id,),
    )
    assert answers == [(0, 1, "1")]
    texts = await _asked(b)
    assert len(texts) == 2 and texts[1].startswith("Rate us 0-10")

    results = await b.surveys.results(ADMIN, survey_id)
    assert results.questions[0].answered == 1 and results.sessions["open"] == 1

    # The scale's time-out passes: both nodes' loops at once close the session once.
    clock.advance(61 * 60)
    closed = await asyncio.gather(a.survey_timeouts.run_once(), b.survey_timeouts.run_once())
    # (the nodes' own loops may have closed it first: then neither of these did)
    assert [i for ids in closed for i in ids] in ([], [sent.session_id])
    assert await _session(b, sent.session_id) == ("timed_out", 1)
    await a.sink.inbound("main", InboundSms(WHO, "9", SHORT_CODE))  # late: no answer
    assert len(await _rows(a, "SELECT 1 FROM survey_answers")) == 1
    assert len(await _asked(a)) == 2


async def test_a_stop_received_on_one_node_ends_the_survey_started_on_the_other(
    pair: list[Gateway], clock: FakeClock
) -> None:
    a, b = pair
    sent = await a.surveys.send(ADMIN, await make_survey(a), Target(to=OTHER))
    assert sent.session_id is not None
    clock.advance(5)
    await b.sink.inbound("main", InboundSms(OTHER, "STOP", SHORT_CODE))
    assert await _session(a, sent.session_id) == ("stopped", 0)
    assert await _rows(a, "SELECT 1 FROM survey_answers") == []
    assert len(await _asked(a, OTHER)) == 1  # the first question only
