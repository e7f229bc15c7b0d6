"""Contacts, groups and templates for the campaign tests, written as the contacts and
templates branches write them (rows in `contacts`, `contact_group_members`; a template
version through `gateway.templates.store.save`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.app import Gateway
from gateway.consent.ledger import contact_row_id
from gateway.templates import store as templates
from gateway.templates.store import Draft, Variant


def numbers(count: int, first: int = 0) -> list[str]:
    return [f"+1202555{first + i:04d}" for i in range(count)]


async def add_contacts(
    gw: Gateway,
    count: int,
    *,
    group: str | None = "g1",
    language: str | None = None,
    first: int = 0,
    tags: Sequence[str] = (),
) -> list[str]:
    """`count` contacts (numbers from `numbers`), members of `group`; their numbers."""
    store = gw.store
    assert store.cipher is not None
    cipher = store.cipher
    now = gw.clock.time()
    made = numbers(count, first)

    def job(conn: sqlite3.Connection) -> None:
        if group is not None:
            conn.execute(
                "INSERT OR IGNORE INTO contact_groups VALUES (?, ?, NULL, ?, ?)",
                (group, f"Group {group}", now, now),
            )
        for number in made:
            idx = store.blind_index(number)
            conn.execute(
                "INSERT INTO contacts (idx, number_ct, language, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (idx, cipher.encrypt(number, contact_row_id(idx), "number"), language, now, now),
            )
            if group is not None:
                conn.execute(
                    "INSERT INTO contact_group_members VALUES (?, ?, ?)", (group, idx, now)
                )
            for tag in tags:
                conn.execute("INSERT INTO contact_tags VALUES (?, ?)", (tag, idx))

    await store.writer.run(job)
    return made


async def save_template(
    gw: Gateway,
    name: str = "flu",
    variants: Sequence[tuple[str | None, str, int]] = (
        ("A", "Flu shots at the clinic this week.", 3),
        ("B", "Get your flu shot this week at the clinic.", 1),
    ),
    *,
    language: str = "en",
    purpose: str = "informational",
) -> None:
    draft = Draft(
        name, language, purpose, (), tuple(Variant(n, body, w) for n, body, w in variants)
    )
    now = gw.clock.time()
    await gw.store.writer.run(lambda conn: templates.save(conn, draft, "test", now))


async def campaign_messages(gw: Gateway, campaign_id: str) -> list[dict[str, object]]:
    rows = await gw.store.reader.all(
        "SELECT id, state, variant, priority, purpose, error_code, to_index FROM messages"
        " WHERE campaign_id = ? ORDER BY id",
        (campaign_id,),
    )
    return [dict(r) for r in rows]
