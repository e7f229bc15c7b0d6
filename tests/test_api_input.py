"""Issue 10 point 12: errors never echo what was sent, a batch is checked item by item,
and the number parser reads only plain ASCII numbers (no letters, other scripts'
digits or extensions)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.intake import normalise_number
from gateway.tokens import create_token
from tests.conftest import GatewayFactory
from tests.test_api import Api, _api, _error

GOOD = "+12025550199"
CANARY = "CANARY7Q"  # must never come back in an answer

NOT_NUMBERS = [
    "CANARY-NUM-+12025550199",
    "tel:+12025550199",
    "1-800-FLOWERS",
    "+1202555O199",  # a letter O
    "\uff0b\uff11\uff12\uff10\uff12\uff15\uff15\uff15\uff10\uff11\uff19\uff19",  # full width
    "+\u0661\u0662\u0660\u0662\u0665\u0665\u0665\u0660\u0661\u0669\u0669",  # Arabic-Indic
    "+\u06f1\u06f2\u06f0\u06f2\u06f5\u06f5\u06f5\u06f0\u06f1\u06f9\u06f9",  # Persian
    "+12025550199 ext. 12",
    "+12025550199;ext=12",
    "+12025550199 x12",
    "+12025550199#12",
    "+1 202 555 0199\n",
]
NUMBERS = ["+12025550199", "(202) 555-0199", "202.555.0199", "+1 202-555-0199", " 2025550199 "]


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway()
    async for a in _api(gw):
        yield a


def test_number_parser_reads_plain_numbers_only() -> None:
    for text in NOT_NUMBERS:
        assert normalise_number(text, "US") is None, text
    for text in NUMBERS:
        assert normalise_number(text, "US") == GOOD, text


@pytest.mark.parametrize("to", NOT_NUMBERS)
async def test_garbage_numbers_are_refused_single_and_in_batch(api: Api, to: str) -> None:
    error = await _error(
        await api.post("/api/v1/messages", {"to": to, "body": "x"}), 422, "invalid_number"
    )
    assert error["field"] == "to"
    batch = {"messages": [{"to": GOOD, "body": "x"}, {"to": to, "body": "x"}]}
    result = await (await api.post("/api/v1/messages/batch", batch)).json()
    assert (result["accepted"], result["rejected"]) == (1, 1)
    assert result["results"][1]["error"]["code"] == "invalid_number"
    assert result["results"][1]["error"]["field"] == "messages[1].to"
    assert await api.count() == 1


ECHO_CASES: list[tuple[dict[str, Any], str, str | None]] = [
    ({"priority": CANARY}, "invalid_field", "priority"),
    ({CANARY: 1}, "unknown_field", None),
    ({f"x{CANARY}": {"y": CANARY}}, "unknown_field", None),
    ({"route": f"{CANARY} x"}, "invalid_field", "route"),
    ({"send_at": f"{CANARY}T00:00:00Z"}, "invalid_field", "send_at"),
    ({"callback_url": f"ftp://{CANARY}"}, "invalid_field", "callback_url"),
    ({"category": [CANARY]}, "invalid_field", "category"),
]


@pytest.mark.parametrize(("extra", "code", "field"), ECHO_CASES)
async def test_errors_never_echo_the_value_or_an_unknown_name(
    api: Api, extra: dict[str, Any], code: str, field: str | None
) -> None:
    body = {"to": GOOD, "body": "x", **extra}
    resp = await api.post("/api/v1/messages", body)
    error = await _error(resp, 422, code)
    assert error.get("field") == field
    assert CANARY not in await resp.text()
    batch = {"messages": [{"to": GOOD, "body": "ok"}, body]}
    resp = await api.post("/api/v1/messages/batch", batch)
    assert resp.status == 202
    assert CANARY not in await resp.text()
    result = await resp.json()
    item = result["results"][1]["error"]
    assert item["code"] == code
    assert item.get("field") == ("messages[1]" if field is None else f"messages[1].{field}")
    assert await api.count() == 1


async def test_batch_refuses_schema_failures_per_item(api: Api) -> None:
    items: list[Any] = [
        {"to": GOOD, "body": "one"},
        {"to": GOOD, "body": "x", "priority": "urgent"},
        {"to": GOOD, "body": "x", "colour": "red"},
        {"to": GOOD},
        5,
        {"to": GOOD, "body": "two", "priority": "bulk"},
    ]
    resp = await api.post("/api/v1/messages/batch", {"messages": items})
    assert resp.status == 202, await resp.text()
    result = await resp.json()
    assert (result["accepted"], result["rejected"]) == (2, 4)
    codes = [r.get("error", {}).get("code") for r in result["results"]]
    assert codes == [None, "invalid_field", "unknown_field", "missing_field", "invalid_field", None]
    fields = [r.get("error", {}).get("field") for r in result["results"]]
    assert fields == [
        None,
        "messages[1].priority",
        "messages[2]",
        "messages[3].body",
        "messages[4]",
        None,
    ]
    assert result["results"][5]["priority"] == "bulk"
    assert "urgent" not in json.dumps(result) and "colour" not in json.dumps(result)
    assert await api.count() == 2


async def test_number_lookup_refuses_garbage(api: Api) -> None:
    phi = await create_token(api.gw.store, "p", frozenset({"read", "phi"}), api.gw.clock)
    resp = await api.get("/api/v1/messages?to=CANARY-NUM-%2B12025550199", phi.text)
    await _error(resp, 400, "invalid_number")
    assert "CANARY" not in await resp.text()
