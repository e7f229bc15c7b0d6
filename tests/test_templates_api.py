"""Issue 13 points 1 and 7: `/api/v1/templates` over the real app on loopback: list,
versions, save (a new version, refused by the lint with a stable code that never
quotes the text), activate, delete, preview with encoding and segments, lint; scopes
as the consent API has them; parallel saves each get their own version number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.tokens import create_token
from tests.conftest import GatewayFactory
from tests.test_api import Api, _api, _error

REMINDER = {
    "purpose": "appointment",
    "kind": "reminder",
    "variables": {"clinic": {}, "start": {}, "ward": {"type": "text", "max_length": 20}},
    "body": "{clinic}: see you {start} on ward {ward}. Reply STOP to opt out",
}


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway()
    async for a in _api(gw, frozenset({"read", "admin"})):
        yield a


async def _put(api: Api, path: str, body: Any, token: str | None = None) -> Any:
    return await api.client.put(path, json=body, headers=api.auth(token))


async def _read_token(api: Api) -> str:
    return (await create_token(api.gw.store, "r", frozenset({"read", "send"}), api.gw.clock)).text


async def test_the_built_in_templates_are_listed_and_a_save_makes_a_new_version(
    api: Api,
) -> None:
    listed = await (await api.get("/api/v1/templates")).json()
    heads = {(t["name"], t["language"]) for t in listed["templates"]}
    assert ("reminder", "es") in heads and ("medication_dose", "en") in heads
    assert len(heads) == 12 and all(t["builtin"] for t in listed["templates"])

    r = await _put(api, "/api/v1/templates/reminder/en", REMINDER)
    assert r.status == 201, await r.text()
    saved = await r.json()
    assert (saved["version"], saved["active"], saved["builtin"]) == (2, True, False)
    assert saved["variables"] == [
        {"name": "clinic", "type": "provider", "max_length": None, "default": None},
        {"name": "start", "type": "datetime", "max_length": None, "default": None},
        {"name": "ward", "type": "text", "max_length": 20, "default": None},
    ]
    versions = (await (await api.get("/api/v1/templates/reminder")).json())["templates"]
    en = [(v["version"], v["active"]) for v in versions if v["language"] == "en"]
    assert en == [(2, True), (1, False)]
    entries = await api.gw.audit.entries(limit=50)
    assert any(e.action == "template_saved" and e.target_id == saved["id"] for e in entries)

    r = await api.post("/api/v1/templates/reminder/en/versions/1/activate", {})
    assert r.status == 200 and (await r.json())["version"] == 1
    await _error(
        await api.post("/api/v1/templates/reminder/en/versions/9/activate", {}), 404, "not_found"
    )
    await _error(await api.get("/api/v1/templates/nothing"), 404, "not_found")


async def test_a_save_the_lint_refuses_names_the_rule_and_never_the_words(api: Api) -> None:
    cases = [
        ("HIV follow-up {start}.", "template_diagnosis", "HIV"),
        ("glucose 182 mg/dL on {start}.", "template_result_value", "182"),
        ("insulin pick-up {start}.", "template_drug_name", "insulin"),
        ("see you {start}, your invoice is due.", "template_marketing", "invoice"),
    ]
    for text, code, secret in cases:
        body = {**REMINDER, "body": "{clinic}: " + text + " Reply STOP to opt out"}
        r = await _put(api, "/api/v1/templates/visit/en", body)
        error = await _error(r, 422, code)
        assert secret.lower() not in error["message"].lower()
        assert error["field"] == "body"
    no_opt_out = {**REMINDER, "body": "{clinic}: see you {start}."}
    error = await _error(
        await _put(api, "/api/v1/templates/visit/en", no_opt_out), 422, "template_opt_out"
    )
    assert "Reply STOP to opt out" in error["message"]
    no_provider = {**REMINDER, "body": "See you {start}. Reply STOP to opt out"}
    await _error(
        await _put(api, "/api/v1/templates/visit/en", no_provider), 422, "template_provider_name"
    )
    wide = {**REMINDER, "variables": {**REMINDER["variables"], "ward": {"type": "text"}}}
    wide["body"] = REMINDER["body"] + ". " + "Please arrive early. " * 4
    await _error(await _put(api, "/api/v1/templates/visit/en", wide), 422, "template_too_long")
    note = {**REMINDER, "variables": {"clinic": {}, "note": {}}, "body": "{clinic}: {note}"}
    await _error(await _put(api, "/api/v1/templates/visit/en", note), 422, "template_free_text")
    unknown = {**REMINDER, "body": "{clinic}: {room}. Reply STOP to opt out"}
    await _error(
        await _put(api, "/api/v1/templates/visit/en", unknown), 422, "template_unknown_variable"
    )
    reach = {**REMINDER, "body": "{clinic.__class__}"}
    await _error(await _put(api, "/api/v1/templates/visit/en", reach), 422, "template_syntax")
    # Nothing was saved.
    await _error(await api.get("/api/v1/templates/visit"), 404, "not_found")


async def test_bad_requests_get_stable_codes(api: Api) -> None:
    both = {**REMINDER, "variants": [{"name": "A", "body": "x"}, {"name": "B", "body": "y"}]}
    await _error(await _put(api, "/api/v1/templates/visit/en", both), 422, "invalid_field")
    neither = {k: v for k, v in REMINDER.items() if k != "body"}
    await _error(await _put(api, "/api/v1/templates/visit/en", neither), 422, "invalid_field")
    await _error(
        await _put(api, "/api/v1/templates/visit/en", {**REMINDER, "purpose": "spam"}),
        422,
        "invalid_purpose",
    )
    await _error(
        await _put(api, "/api/v1/templates/visit/en", {**REMINDER, "kind": "party"}),
        422,
        "invalid_kind",
    )
    long_default = {"ward": {"type": "text", "max_length": 3, "default": "East"}}
    r = await _put(api, "/api/v1/templates/visit/en", {**REMINDER, "variables": long_default})
    await _error(r, 422, "invalid_variable")
    bad_var = {**REMINDER, "variables": {"ward": {"type": "html"}}}
    await _error(await _put(api, "/api/v1/templates/visit/en", bad_var), 422, "invalid_variable")
    await _error(
        await _put(api, "/api/v1/templates/visit/en", {**REMINDER, "colour": "red"}),
        422,
        "unknown_field",
    )
    await _error(await _put(api, "/api/v1/templates/Visit/en", REMINDER), 404, "not_found")
    await _error(await _put(api, "/api/v1/templates/visit/EN", REMINDER), 404, "not_found")
    r = await api.post("/api/v1/templates/preview", {"language": "english", "purpose": "x"})
    await _error(r, 422, "invalid_language")


async def test_a_default_is_saved_and_shown(api: Api) -> None:
    variables = {**REMINDER["variables"], "ward": {"type": "text", "default": "East wing"}}
    r = await _put(api, "/api/v1/templates/visit/en", {**REMINDER, "variables": variables})
    assert r.status == 201, await r.text()
    ward = [v for v in (await r.json())["variables"] if v["name"] == "ward"]
    assert ward == [{"name": "ward", "type": "text", "max_length": None, "default": "East wing"}]


async def test_editing_needs_admin_and_reading_needs_read(api: Api) -> None:
    token = await _read_token(api)
    await _error(
        await _put(api, "/api/v1/templates/visit/en", REMINDER, token=token), 403, "forbidden"
    )
    r = await api.client.delete("/api/v1/templates/reminder/en", headers=api.auth(token))
    await _error(r, 403, "forbidden")
    assert (await api.get("/api/v1/templates", token=token)).status == 200
    r = await api.post("/api/v1/templates/lint", {**REMINDER, "language": "en"}, token=token)
    assert r.status == 200
    r = await api.client.get("/api/v1/templates")
    await _error(r, 401, "unauthenticated")


async def test_delete_leaves_no_active_version_and_is_not_seeded_again(api: Api) -> None:
    r = await api.client.delete("/api/v1/templates/reminder/es", headers=api.auth())
    assert r.status == 200, await r.text()
    await _error(
        await api.client.delete("/api/v1/templates/reminder/es", headers=api.auth()),
        404,
        "not_found",
    )
    assert await api.gw.templates.ensure_defaults() == 0
    listed = await (await api.get("/api/v1/templates")).json()
    assert ("reminder", "es") not in {(t["name"], t["language"]) for t in listed["templates"]}
    # Spanish readers now get the English text (the next language of the chain).
    done = await api.gw.store.writer.run(
        lambda c: api.gw.templates.renderer.render(
            c, "reminder", "es", {"start": "0", "location": "A", "short_code": "1"}
        )
    )
    assert done.language == "en"


async def test_parallel_saves_each_get_their_own_version(api: Api) -> None:
    saves = [
        _put(api, "/api/v1/templates/visit/en", {**REMINDER, "body": REMINDER["body"] + "!" * i})
        for i in range(8)
    ]
    answers = await asyncio.gather(*saves)
    assert [r.status for r in answers] == [201] * 8
    versions = sorted([(await r.json())["version"] for r in answers])
    assert versions == list(range(1, 9))
    listed = (await (await api.get("/api/v1/templates/visit")).json())["templates"]
    assert [v["active"] for v in listed].count(True) == 1


async def test_preview_renders_each_variant_with_encoding_segments_and_the_lint(
    api: Api,
) -> None:
    draft = {
        "language": "es",
        "purpose": "appointment",
        "variables": {"clinic": {}, "start": {}},
        "variants": [
            {"name": "A", "body": "{clinic}: cita el {start}. Responda STOP para no recibir más"},
            {"name": "B", "body": "{clinic}: cita el {start:long}, traiga su carnet", "weight": 2},
        ],
        "values": {"clinic": "Clínica Norte", "start": "2026-07-01T15:00:00Z"},
        "time_zone": "America/Mexico_City",
    }
    r = await api.post("/api/v1/templates/preview", draft)
    assert r.status == 200, await r.text()
    view = await r.json()
    a, b = view["texts"]
    assert a["text"] == (
        "Clínica Norte: cita el mié 1 jul a las 9:00. Responda STOP para no recibir más"
    )
    assert (a["encoding"], a["segments"], a["characters"]) == ("ucs2", 2, len(a["text"]))
    assert b["text"] == "Clínica Norte: cita el miércoles 1 de julio a las 9:00, traiga su carnet"
    assert view["ok"] is False
    # A is UCS-2 (í, á) and longer than the 70 characters one such SMS holds
    assert [(p["rule"], p["variant"]) for p in view["problems"]] == [
        ("too_long", "A"),
        ("opt_out", "B"),
    ]
    # Without values, samples fill in; an English text in GSM-7 is one segment.
    plain = {
        "language": "en",
        "purpose": "informational",
        "variables": {"clinic": {}},
        "body": "{clinic}: the lab opens at 8",
    }
    view = await (await api.post("/api/v1/templates/preview", plain)).json()
    assert view["ok"] is True
    assert view["texts"][0] == {
        "variant": None,
        "text": "Mercy Clinic: the lab opens at 8",
        "characters": 32,
        "encoding": "gsm7",
        "segments": 1,
    }


async def test_lint_lists_every_problem_with_its_span(api: Api) -> None:
    body = "{clinic}: your HIV test was positive"
    r = await api.post(
        "/api/v1/templates/lint",
        {"language": "en", "purpose": "results", "variables": {"clinic": {}}, "body": body},
    )
    view = await r.json()
    found = {(p["rule"], p["start"], p["end"]) for p in view["problems"]}
    assert ("diagnosis", body.index("HIV"), body.index("HIV") + 3) in found
    assert ("result_value", body.index("positive"), len(body)) in found
    assert ("opt_out", None, None) in found
    assert view["ok"] is False


async def test_the_openapi_document_describes_the_template_paths(api: Api) -> None:
    doc = await (await api.get("/api/v1/openapi.json")).json()
    paths = doc["paths"]
    assert "/api/v1/templates" in paths and "/api/v1/templates/preview" in paths
    put = paths["/api/v1/templates/{name}/{language}"]["put"]
    assert "422" in put["responses"]


async def test_a_preview_too_long_for_any_sms_says_how_many_segments(api: Api) -> None:
    draft = {
        "language": "en",
        "purpose": "informational",
        "variables": {"a": {"type": "text", "max_length": 160}},
        "body": "{a}" * 333,
        "values": {"a": "x" * 160},
    }
    r = await api.post("/api/v1/templates/preview", draft)
    assert r.status == 200, await r.text()
    text = (await r.json())["texts"][0]
    assert (text["characters"], text["encoding"], text["segments"]) == (53280, "gsm7", 349)
