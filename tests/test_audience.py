"""Who an audience is: groups or tags, then every attribute filter, in stable batches."""

from __future__ import annotations

import json
import sqlite3

from gateway.contacts.audience import AudienceSpec, audience_batches, audience_size
from gateway.store.schema import migrate


def _store() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    rows = [
        (b"\x01", "en", "18-34", "north", ["flu"]),
        (b"\x02", "es", "65+", "north", ["flu", "tips"]),
        (b"\x03", "en", "65+", "south", []),
        (b"\x04", None, None, None, None),
    ]
    for idx, lang, band, clinic, prefs in rows:
        conn.execute(
            "INSERT INTO contacts (idx, number_ct, language, age_band, clinic, preferences,"
            " created_at, updated_at) VALUES (?, x'00', ?, ?, ?, ?, 0, 0)",
            (idx, lang, band, clinic, None if prefs is None else json.dumps(prefs)),
        )
    conn.execute("INSERT INTO contact_groups VALUES ('g1', 'Flu 2026', NULL, 0, 0)")
    conn.execute("INSERT INTO contact_group_members VALUES ('g1', x'01', 0), ('g1', x'03', 0)")
    conn.execute("INSERT INTO contact_tags VALUES ('vip', x'02')")
    return conn


def _all(conn: sqlite3.Connection, spec: AudienceSpec, batch: int = 1000) -> list[bytes]:
    return [i for b in audience_batches(conn, spec, batch) for i in b]


def test_everyone_when_nothing_is_chosen() -> None:
    conn = _store()
    assert AudienceSpec().everyone
    assert _all(conn, AudienceSpec()) == [b"\x01", b"\x02", b"\x03", b"\x04"]


def test_groups_or_tags_then_every_filter() -> None:
    conn = _store()
    assert _all(conn, AudienceSpec(groups=["g1"], tags=["vip"])) == [b"\x01", b"\x02", b"\x03"]
    assert _all(conn, AudienceSpec(groups=["g1"], age_bands=["65+"])) == [b"\x03"]
    assert _all(conn, AudienceSpec(clinics=["north"], preferences=["flu", "tips"])) == [b"\x02"]
    assert _all(conn, AudienceSpec(languages=["es"], groups=["g1"])) == []


def test_batches_walk_the_whole_audience_once() -> None:
    conn = _store()
    batches = list(audience_batches(conn, AudienceSpec(), batch=3))
    assert batches == [[b"\x01", b"\x02", b"\x03"], [b"\x04"]]
    assert audience_size(conn, AudienceSpec(clinics=["north", "south"])) == 3
