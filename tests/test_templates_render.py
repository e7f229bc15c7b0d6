"""Issue 13 point 1: rendering as the notice runner does it, in the writer's
transaction on a real store: the built-in defaults, the language fallback chain, typed
values formatted in the clinic's zone and the reader's language (DST included), A/B
variants chosen stably by weight, and renders refused rather than sent half-filled."""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.app import Gateway
from gateway.clinical.notices import NoticeKind
from gateway.clinical.rendering import Rendered, Renderer, TemplateMissing
from gateway.templates import dates, store
from gateway.templates.renderer import RenderRefused, choose, fallback_chain
from gateway.templates.store import Draft, Variant
from gateway.templates.variables import Variable, VarType
from tests.conftest import GatewayFactory

NY = ZoneInfo("America/New_York")
CLINIC = Variable("clinic", VarType.PROVIDER, 24)
START = Variable("start", VarType.DATETIME)
VALUES = {
    "clinic": "North Clinic",
    "start": "2026-03-10T18:30:00Z",
    "location": "Room 4",
    "short_code": "4821",
    "time_zone": "America/New_York",
}


async def render(
    gw: Gateway,
    name: str,
    language: str | None,
    variables: Mapping[str, str],
    variant: str | None = None,
) -> Rendered:
    renderer: Renderer = gw.templates.renderer  # the runner's seam, type-checked

    def job(conn: sqlite3.Connection) -> Rendered:
        return renderer.render(conn, name, language, variables, variant=variant)

    return await gw.store.writer.run(job)


async def save(gw: Gateway, draft: Draft) -> int:
    return (await gw.store.writer.run(lambda c: store.save(c, draft, "test", 0.0)))[1]


def draft(name: str, language: str, *variants: Variant) -> Draft:
    return Draft(name, language, "informational", (CLINIC, START), variants)


async def test_every_notice_kind_renders_from_the_built_in_defaults(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    for kind in NoticeKind:
        for language in ("en", "es"):
            done = await render(gw, kind.value, language, VALUES)
            assert done.language == language and done.version == 1 and done.variant is None
            assert done.text.startswith("North Clinic: ")
            assert len(done.text) <= 160
    reminder = await render(gw, "reminder", "en", VALUES)
    assert reminder.text == (
        "North Clinic: appointment Tue Mar 10 at 2:30 PM at Room 4. Reply C 4821 to"
        " confirm, R to reschedule, STOP to opt out"
    )
    spanish = await render(gw, "reminder", "es-MX", VALUES)
    assert spanish.language == "es"
    assert "cita el mar 10 mar a las 14:30 en Room 4" in spanish.text
    assert spanish.text.endswith("STOP para no recibir mas")
    # A second start seeds nothing more.
    assert await gw.templates.ensure_defaults() == 0


async def test_the_fallback_chain_goes_region_base_site_default_english(
    open_gateway: GatewayFactory,
) -> None:
    assert fallback_chain("es-MX", "fr") == ["es-MX", "es", "fr", "en"]
    assert fallback_chain("pt_br", "en") == ["pt-BR", "pt", "en"]
    assert fallback_chain(None, "es") == ["es", "en"]
    assert fallback_chain("not a tag!", "en") == ["en"]
    gw = await open_gateway(templates={"default_language": "fr"})
    await save(gw, draft("visit", "en", Variant(None, "{clinic} en")))
    await save(gw, draft("visit", "fr", Variant(None, "{clinic} fr")))
    await save(gw, draft("visit", "es-MX", Variant(None, "{clinic} es-MX")))
    assert (await render(gw, "visit", "es-MX", VALUES)).text == "North Clinic es-MX"
    assert (await render(gw, "visit", "es", VALUES)).text == "North Clinic fr"  # site default
    assert (await render(gw, "visit", "de", VALUES)).text == "North Clinic fr"
    await gw.store.writer.run(lambda c: store.delete(c, "visit", "fr", 0.0))
    done = await render(gw, "visit", "de", VALUES)
    assert (done.text, done.language) == ("North Clinic en", "en")
    with pytest.raises(TemplateMissing, match="no active version in de, fr, en"):
        await render(gw, "nothing-here", "de", VALUES)


async def test_a_new_version_is_active_and_an_old_one_can_come_back(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    assert await save(gw, draft("visit", "en", Variant(None, "{clinic} one"))) == 1
    assert await save(gw, draft("visit", "en", Variant(None, "{clinic} two"))) == 2
    done = await render(gw, "visit", "en", VALUES)
    assert (done.text, done.version) == ("North Clinic two", 2)
    await gw.store.writer.run(lambda c: store.activate(c, "visit", "en", 1, 0.0))
    assert (await render(gw, "visit", "en", VALUES)).text == "North Clinic one"
    assert not await gw.store.writer.run(lambda c: store.activate(c, "visit", "en", 9, 0.0))


async def test_values_that_do_not_fit_refuse_the_render_naming_only_the_variable(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    for changed, reason in (
        ({"start": "next tuesday"}, "start: not a datetime value"),
        ({"clinic": "A" * 25}, "clinic: longer than its 24 characters"),
        ({"short_code": "1-3"}, "short_code: not a short code"),
        ({"time_zone": "Mars/Olympus"}, "time_zone: not an IANA time zone"),
    ):
        with pytest.raises(RenderRefused, match=reason) as e:
            await render(gw, "reminder", "en", {**VALUES, **changed})
        assert isinstance(e.value, TemplateMissing)  # the runner skips, never sends
        for value in changed.values():
            assert value not in str(e.value) or value == "Mars/Olympus"
    missing = {k: v for k, v in VALUES.items() if k != "short_code"}
    with pytest.raises(RenderRefused, match="no value for short_code"):
        await render(gw, "reminder", "en", missing)


async def test_a_declared_default_fills_a_label_no_one_gave(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    no_location = {k: v for k, v in VALUES.items() if k != "location"}
    en = await render(gw, "reminder", "en", no_location)
    assert "2:30 PM at the clinic. Reply C 4821" in en.text
    es = await render(gw, "medication_ready", "es", {})
    assert es.text.startswith("Hospital: su receta esta lista para recoger en la farmacia.")
    # The notice's value wins over the default.
    assert "at Room 4." in (await render(gw, "reminder", "en", VALUES)).text


async def test_site_values_fill_what_a_notice_does_not_carry(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(templates={"values": {"clinic": "Mercy Clinic"}})
    done = await render(gw, "result_available", "en", {})
    assert done.text.startswith("Mercy Clinic: you have new results available")
    assert (await render(gw, "result_available", "en", {"clinic": "Ward 7"})).text.startswith(
        "Ward 7:"
    )


def test_dates_are_right_across_daylight_saving_changes() -> None:
    # US spring forward: 2026-03-08 02:00 EST -> 03:00 EDT.
    before = dates.parse_instant("2026-03-08T06:30:00Z", NY)
    after = dates.parse_instant("2026-03-08T07:30:00Z", NY)
    assert dates.format_datetime(before, "time", "en") == "1:30 AM"
    assert dates.format_datetime(after, "time", "en") == "3:30 AM"
    # Fall back: 2026-11-01 01:30 happens twice, an hour apart.
    first = dates.parse_instant("2026-11-01T05:30:00Z", NY)
    second = dates.parse_instant("2026-11-01T06:30:00Z", NY)
    assert dates.format_datetime(first, "time", "en") == "1:30 AM"
    assert dates.format_datetime(second, "time", "en") == "1:30 AM"
    assert first.utcoffset() != second.utcoffset()
    # An instant near midnight UTC is still the evening before in New York.
    late = dates.parse_instant("1772413200", NY)  # 2026-03-02T01:00:00Z
    assert dates.format_datetime(late, "datetime", "en") == "Sun Mar 1 at 8:00 PM"
    # A wall time without an offset is already the clinic's: shown as written.
    wall = dates.parse_instant("2026-03-08T09:15", NY)
    assert dates.format_datetime(wall, "long", "en") == "Sunday, March 8 at 9:15 AM"


def test_spanish_names_days_and_months_with_its_own_clock() -> None:
    when = datetime(2026, 9, 30, 13, 5, tzinfo=NY)
    assert dates.format_datetime(when, "long", "es") == "miércoles 30 de septiembre a las 13:05"
    assert dates.format_datetime(when, "datetime", "es") == "mié 30 sep a las 13:05"
    one = datetime(2026, 1, 3, 1, 30, tzinfo=NY)
    assert dates.format_datetime(one, "datetime", "es") == "sab 3 ene a la 1:30"
    assert dates.format_datetime(when, "weekday", "es-MX") == "miércoles"
    assert dates.format_datetime(when, "date", "en") == "Wednesday, September 30"
    assert dates.format_datetime(when, "time", "en") == "1:05 PM"
    # A language without names here gets numeric forms, never English words.
    assert dates.format_datetime(when, "long", "fr") == "2026-09-30 13:05"


async def test_a_variant_split_is_stable_and_follows_the_weights(
    open_gateway: GatewayFactory,
) -> None:
    variants = (Variant("A", "{clinic} A", 3), Variant("B", "{clinic} B", 1))
    picks = collections.Counter(choose("visit", variants, f"appt-{i}").name for i in range(4000))
    assert 0.72 < picks["A"] / 4000 < 0.78  # 3:1, within about four standard deviations
    gw = await open_gateway()
    await save(gw, draft("visit", "en", *variants))
    seen = set()
    for i in range(20):
        key = {**VALUES, "split_key": f"appt-{i}"}
        first = await render(gw, "visit", "en", key)
        again = await render(gw, "visit", "en", key)
        assert (first.variant, first.text) == (again.variant, again.text)
        assert first.text == f"North Clinic {first.variant}"
        seen.add(first.variant)
    assert seen == {"A", "B"}
    # A variant the notice was planned with wins; one that no longer exists falls back.
    assert (await render(gw, "visit", "en", VALUES, variant="B")).variant == "B"
    assert (await render(gw, "visit", "en", VALUES, variant="Z")).variant in ("A", "B")


@pytest.mark.parametrize(
    "value", ["999999999999", "-999999999999", "0001-01-01T00:00+14:00", "2026-02-30"]
)
def test_instants_out_of_range_are_refused_not_crashed_on(value: str) -> None:
    from gateway.templates.variables import BadVariable

    with pytest.raises(BadVariable, match="start: not a datetime value"):
        START.render(value, None, "en", NY)
