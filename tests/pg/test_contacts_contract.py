"""The contact book's contract (issue 18): contacts, groups, tags and saved audiences
give the same answers on the SQLite store (`LocalContactBook`) and on the shared
PostgreSQL tables (`ClusterContactBook`), audiences chosen by every kind of filter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster.contacts import ClusterContactBook
from gateway.contacts.audience import MAX_ARMS, AudienceSpec
from gateway.contacts.book import ContactBook, LocalContactBook
from gateway.store.contacts_sql import CREATED, UNCHANGED, UPDATED, Changes, ImportRow
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store

NOW = 1_800_000_000.0


def _idx(n: int) -> bytes:
    return bytes([n]) * 16


def _row(n: int, **fields: object) -> ImportRow:
    values = {"language": "en", "clinic": "north" if n % 2 else "south"}
    return ImportRow(
        _idx(n),
        f"+1202555{n:04d}",
        {**values, **fields.pop("values", {})},  # type: ignore[dict-item]
        fields.pop("preferences", ("sms",) if n < 3 else None),  # type: ignore[arg-type]
        fields.pop("tags", ("flu",) if n % 2 else ()),  # type: ignore[arg-type]
        fields.pop("groups", ("Ward 1",) if n <= 3 else ()),  # type: ignore[arg-type]
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def book(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ContactBook]:
    if request.param == "sqlite":
        store = Store(tmp_path / "gw.db", bytes(32))
        await store.open()
        try:
            yield LocalContactBook(store)
        finally:
            await store.close()
        return
    dsn: str = request.getfixturevalue("migrated_dsn")
    async with AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False) as pool:
        yield ClusterContactBook(pool, FieldCipher({1: bytes(range(32))}, bytes(range(32, 64))))


async def _keys(book: ContactBook, spec: AudienceSpec) -> list[int]:
    return [idx[0] for idx in await book.audience_idxs(spec, b"", 100)]


async def test_imports_groups_tags_and_audiences_answer_alike(book: ContactBook) -> None:
    rows = [_row(n) for n in range(1, 6)]
    assert await book.import_rows(rows, None, NOW) == [CREATED] * 5
    assert await book.import_rows(rows, None, NOW) == [UNCHANGED] * 5
    changed = [_row(1, values={"language": "es"}), _row(2, tags=("flu", "asthma"))]
    assert await book.import_rows(changed, None, NOW + 1) == [UPDATED, UPDATED]

    (ward,) = await book.groups()
    assert (ward.name, ward.members) == ("Ward 1", 3)
    found = await book.contact(_idx(2))
    assert found is not None
    assert (found.number, found.language, found.preferences) == ("+12025550002", "en", ("sms",))
    assert (found.tags, found.groups) == (("asthma", "flu"), (ward.id,))
    assert await book.states(_idx(2)) == []

    # Every kind of filter, alone and together (members of any group or tag, then all
    # the attribute filters), in index order, a page after a cursor.
    assert await _keys(book, AudienceSpec()) == [1, 2, 3, 4, 5]
    assert await _keys(book, AudienceSpec(groups=[ward.id])) == [1, 2, 3]
    assert await _keys(book, AudienceSpec(tags=["flu"])) == [1, 2, 3, 5]
    assert await _keys(book, AudienceSpec(groups=[ward.id], tags=["asthma"])) == [1, 2, 3]
    assert await _keys(book, AudienceSpec(tags=["flu"], languages=["en"])) == [2, 3, 5]
    assert await _keys(book, AudienceSpec(clinics=["south"], preferences=["sms"])) == [2]
    assert await _keys(book, AudienceSpec(age_bands=["65+"])) == []
    many = AudienceSpec(tags=[f"t{i}" for i in range(MAX_ARMS)] + ["asthma"])
    assert await _keys(book, many) == [2]  # one membership test past MAX_ARMS arms
    assert [r.key for r in await book.page(AudienceSpec(tags=["flu"]), _idx(1), 2)] == [
        _idx(2).hex(),
        _idx(3).hex(),
    ]
    assert await book.count(AudienceSpec(tags=["flu"])) == 4
    assert await book.facets() == {
        "languages": ["en", "es"],
        "age_bands": [],
        "clinics": ["north", "south"],
        "tags": ["asthma", "flu"],
    }

    # Attribute changes: set, cleared, preferences and tags replaced.
    change = Changes({"age_band": "65+"}, frozenset({"clinic"}), ("post", "sms"), ("copd",))
    assert await book.update(_idx(4), change, NOW + 2)
    assert not await book.update(_idx(9), change, NOW + 2)
    four = await book.contact(_idx(4))
    assert four is not None
    assert (four.age_band, four.clinic, four.preferences, four.tags) == (
        "65+",
        None,
        ("post", "sms"),
        ("copd",),
    )
    assert await _keys(book, AudienceSpec(preferences=["post", "sms"])) == [4]


async def test_group_and_audience_names_are_unique_and_members_counted_once(
    book: ContactBook,
) -> None:
    await book.import_rows([_row(n, groups=()) for n in range(1, 4)], None, NOW)
    gid = await book.create_group("Ward 2", "second floor", NOW)
    assert gid is not None
    assert await book.create_group("Ward 2", None, NOW) is None
    other = await book.create_group("Ward 3", None, NOW)
    assert other is not None
    assert await book.update_group(gid, "Ward 3", None, NOW) == "name_taken"
    assert await book.update_group("g-none", "X", None, NOW) == "not_found"
    assert await book.update_group(gid, "Ward 2b", "", NOW + 1) == "ok"
    group = await book.group(gid)
    assert group is not None and (group.name, group.description) == ("Ward 2b", None)

    # A contact that does not exist is not added; one already in is not counted again.
    assert await book.add_members(gid, [_idx(1), _idx(2), _idx(9)], NOW) == 2
    assert await book.add_members(gid, [_idx(2), _idx(3)], NOW) == 1
    assert await book.add_members("g-none", [_idx(1)], NOW) is None
    assert await book.remove_members(gid, [_idx(1), _idx(9)]) == 1
    assert await _keys(book, AudienceSpec(groups=[gid])) == [2, 3]
    assert await book.delete_group(gid)
    assert not await book.delete_group(gid)
    assert await book.group(gid) is None and await book.add_members(gid, [_idx(1)], NOW) is None

    spec = AudienceSpec(tags=["flu"], languages=["en"])
    aid = await book.save_audience(None, "Flu, English", spec, NOW)
    assert aid and aid != "!"
    assert await book.save_audience(None, "Flu, English", AudienceSpec(), NOW) == ""
    assert await book.save_audience("a-none", "Other", spec, NOW) == "!"
    assert await book.save_audience(aid, "Flu (en)", spec, NOW + 1) == aid
    (saved,) = await book.audiences()
    assert (saved.name, saved.spec) == ("Flu (en)", spec)
    assert await book.delete_audience(aid) and await book.audience(aid) is None
