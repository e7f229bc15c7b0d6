"""`/api/v1/surveys` over the real app on loopback: create and version, send to one
number (and the 409 of a second start), results per question, the CSV export (formula
cells escaped, numbers only for `phi` with include_numbers, every export audited), and
bad input answered with a stable code that never echoes what was sent."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.tokens import create_token
from tests.conftest import GatewayFactory
from tests.survey_rows import OTHER, SURVEY, WHO, text
from tests.test_api import Api, _api, _error

BASE = "/api/v1/surveys"


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway()
    async for a in _api(gw, frozenset({"admin"})):
        yield a


async def _token(api: Api, *scopes: str) -> str:
    return (await create_token(api.gw.store, "t", frozenset(scopes), api.gw.clock)).text


async def _made(api: Api, body: dict[str, Any] | None = None) -> str:
    r = await api.post(BASE, body or SURVEY)
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def _csv(api: Api, path: str, token: str | None = None) -> list[list[str]]:
    r = await api.get(path, token)
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(await r.text())))


async def test_create_version_list_and_the_audit(api: Api) -> None:
    sid = await _made(api)
    r = await api.client.put(f"{BASE}/{sid}", json={**SURVEY, "name": "Visit v2"},
                             headers=api.auth())  # fmt: skip
    assert r.status == 200 and (await r.json())["version"] == 2
    detail = await (await api.get(f"{BASE}/{sid}")).json()
    assert [v["version"] for v in detail["versions"]] == [2, 1]
    assert detail["survey"]["survey"]["questions"][0]["options"][0]["key"] == "1"
    listed = await (await api.get(BASE)).json()
    assert [(s["id"], s["name"]) for s in listed["surveys"]] == [(sid, "Visit v2")]
    actions = [e.action for e in await api.gw.audit.entries(limit=50)]
    assert actions.count("survey_saved") == 2
    reader = await _token(api, "read")
    await _error(await api.post(BASE, SURVEY, reader), 403, "forbidden")


async def test_send_results_and_a_second_start_refused(api: Api) -> None:
    sid = await _made(api)
    r = await api.post(f"{BASE}/{sid}/send", {"to": "(202) 555-0123"})
    assert r.status == 202, await r.text()
    sent = await r.json()
    assert sent["started"] == 1 and sent["status"] == "queued" and sent["session_id"]
    err = await _error(await api.post(f"{BASE}/{sid}/send", {"to": WHO}), 409, "survey_open")
    assert "555" not in err["message"]
    await text(api.gw, "2")
    await text(api.gw, "8")
    results = await (await api.get(f"{BASE}/{sid}/results")).json()
    q0, q1, q2 = results["questions"]
    assert [(b["label"], b["count"]) for b in q0["bars"]] == [
        ("1) Good", 0), ("2) OK", 1), ("3) Bad", 0),
    ]  # fmt: skip
    assert {b["label"]: b["count"] for b in q1["bars"]}["8"] == 1
    assert (q2["kind"], q2["answered"], q2["bars"]) == ("text", 0, [])
    assert results["sessions"]["open"] == 1


async def test_export_escapes_formulas_and_keeps_numbers_out(api: Api) -> None:
    sid = await _made(api)
    for who in (WHO, OTHER):
        assert (await api.post(f"{BASE}/{sid}/send", {"to": who})).status == 202
        for answer in ("1", "10", '=HYPERLINK("http://x")'):
            await text(api.gw, answer, who)
    plain = await _csv(api, f"{BASE}/{sid}/results.csv")  # admin, no phi
    assert plain[0][:10] == ["session", "started_at", "state", "language", "question", "kind",
                             "valid", "value", "reason", "answered_at"]  # fmt: skip
    assert "text" not in plain[0] and "number" not in plain[0]
    assert len(plain) == 1 + 6
    flat = repr(plain)
    assert "555" not in flat and "HYPERLINK" not in flat
    err = await _error(await api.get(f"{BASE}/{sid}/results.csv?include_numbers=true"),
                       403, "forbidden")  # fmt: skip
    assert err["field"] == "include_numbers"
    phi = await _token(api, "read", "phi")
    full = await _csv(api, f"{BASE}/{sid}/results.csv?include_numbers=true", phi)
    assert full[0][-2:] == ["text", "number"]
    texts = [row[-2] for row in full[1:] if row[5] == "text"]
    assert texts == ['\'=HYPERLINK("http://x")'] * 2  # a formula, escaped
    assert {row[-1] for row in full[1:]} == {WHO, OTHER}
    audited = [e for e in await api.gw.audit.entries(limit=50) if e.action == "survey_export"]
    assert len(audited) == 2  # the refused one read nothing and was not exported
    assert {e.detail_map()["numbers"] for e in audited} == {False, True}


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({**SURVEY, "colour": "red"}, "unknown_field", None),  # a name we never declared
        ({**SURVEY, "questions": []}, "invalid_field", "questions"),
        ({**SURVEY, "intro": {"en": "Hi"}}, "invalid_field", "intro"),
        ({**SURVEY, "questions": [{"kind": "choice", "text": {"en": "?", "es": "?"},
          "options": [{"key": "1", "label": {"en": "a", "es": "a"}}]}]},
         "invalid_field", "questions[0].options"),
        ({**SURVEY, "questions": [{"kind": "scale", "text": {"en": "?", "es": "?"},
          "min": 0, "max": 100}]}, "invalid_field", "questions[0].max"),
        ({**SURVEY, "questions": [{"kind": "number", "text": {"en": "?", "es": "?"}}]},
         "invalid_field", "questions[0].min"),
        ({**SURVEY, "purpose": "secret-sauce-4711"}, "invalid_field", "purpose"),
        ({**SURVEY, "questions": [{"kind": "scale", "text": {"en": "?", "es": "?"},
          "min": 0, "max": 5, "max_length": 9}]}, "invalid_field", "questions[0].max_length"),
    ],
)  # fmt: skip
async def test_bad_surveys_are_refused_by_field(
    api: Api, body: dict[str, Any], code: str, field: str | None
) -> None:
    err = await _error(await api.post(BASE, body), 422, code)
    assert err.get("field") == field
    assert "red" not in err["message"] and "secret-sauce" not in err["message"]


async def test_bad_sends_and_queries(api: Api) -> None:
    sid = await _made(api)
    send = f"{BASE}/{sid}/send"
    await _error(await api.post(send, {}), 422, "invalid_field")
    both = {"to": WHO, "audience": {"groups": ["flu"]}}
    await _error(await api.post(send, both), 422, "invalid_field")
    err = await _error(await api.post(send, {"to": "+1 (202) 555-0000 ext 99"}), 422,
                       "invalid_number")  # fmt: skip
    assert "555" not in err["message"]
    await _error(await api.post(send, {"audience": {"groups": ["nobody"]}}), 422, "empty_audience")
    await _error(await api.post(send, "not json"), 400, "bad_json")
    await _error(await api.post(f"{BASE}/svy_0000000000000000/send", {"to": WHO}), 404,
                 "not_found")  # fmt: skip
    await _error(await api.get(f"{BASE}/{sid}/results?version=x"), 400, "invalid_query")
    await _error(await api.get(f"{BASE}/{sid}/results?version=9"), 404, "not_found")
    await _error(await api.get(f"{BASE}/{sid}/results.csv?include_numbers=yes"), 400,
                 "invalid_query")  # fmt: skip
    reader = await _token(api, "read")
    await _error(await api.post(send, {"to": WHO}, reader), 403, "forbidden")
