"""Contacts as an audience: list and edit them, groups, tags, saved audiences, import.

Every front end (the API's `/contacts/...`, `/groups`, `/audiences`, the panel's
contacts pages, `smsgw import contacts`) calls these with a `Caller`. A contact is
named by its key (the blind index in hex), never by its number: numbers stay
encrypted, lists show them masked for the caller (or not at all), and the audit trail
names keys and counts. Reading needs no more than the `read` scope (numbers masked);
changes need the right to record consent (`consent` or `admin`). A contact's consent
standing is the consent ledger's (`ContactBook.states`), shown, never kept here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.clock import Clock
from gateway.consent.zones import valid_zone
from gateway.contacts.audience import AudienceSpec
from gateway.contacts.book import ContactBook, LocalContactBook
from gateway.contacts.csv_import import KEY, MAX_NAME
from gateway.contacts.importer import Importer
from gateway.errors import ApiError
from gateway.store.consent_sql import StateRow
from gateway.store.contacts_sql import AudienceRow, ContactRow
from gateway.store.contacts_sql import Changes as Changes
from gateway.store.contacts_sql import GroupRow as GroupRow
from gateway.store.store import Store
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller

MAX_PAGE = 200
MAX_MEMBERS = 1000  # keys in one add or remove request
ADD_BATCH = 1000  # an audience added to a group: contacts per writer transaction
CONTACT_KEY = re.compile(r"^[0-9a-f]{32}$")
# A group's or audience's name: no control characters, not starting with a space.
NAME_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class ContactItem:
    """A contact as this caller may see it: the number masked, or None."""

    key: str
    number_masked: str | None
    language: str | None
    time_zone: str | None
    age_band: str | None
    clinic: str | None
    preferences: tuple[str, ...]
    tags: tuple[str, ...]
    groups: tuple[str, ...]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ContactPage:
    items: list[ContactItem]
    total: int  # contacts matching the filter
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ContactDetail:
    contact: ContactItem
    consent: tuple[StateRow, ...]


@dataclass(frozen=True, slots=True)
class SavedAudience:
    audience: AudienceRow
    size: int  # counted now


def _invalid(name: str, code: str, what: str) -> ApiError:
    return ApiError(422, code, f"{name}: {what}", field=name)


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def _name(name: str, field: str = "name") -> str:
    if not len(name) <= MAX_NAME or not _NAME.fullmatch(name):
        raise _invalid(field, "invalid_name", f"1 to {MAX_NAME} characters, no control ones")
    return name


def contact_idx(key: str) -> bytes:
    if not CONTACT_KEY.fullmatch(key):
        raise _not_found("contact")
    return bytes.fromhex(key)


class Contacts:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditSink,
        region: str,
        languages: tuple[str, ...],
        book: ContactBook | None = None,
    ) -> None:
        """`book`: where the contacts are kept (None: this node's store; on a cluster
        the shared tables, `gateway/cluster/contacts.py`)."""
        self._book = book or LocalContactBook(store)
        self._clock = clock
        self._audit = audit
        self.languages = languages
        self.region = region
        self.imports = Importer(
            store=store,
            book=self._book,
            clock=clock,
            audit=audit,
            region=region,
            languages=languages,
        )

    def _item(self, caller: Caller, r: ContactRow) -> ContactItem:
        return ContactItem(
            r.key,
            caller.mask(r.number) if caller.sees_masked else None,
            r.language,
            r.time_zone,
            r.age_band,
            r.clinic,
            r.preferences,
            r.tags,
            r.groups,
            r.created_at,
            r.updated_at,
        )

    def _require_write(self, caller: Caller) -> None:
        if not caller.may_record_consent:
            raise ApiError(403, "forbidden", "this caller may not change contacts")

    # -- contacts ----------------------------------------------------------------------

    async def page(
        self, caller: Caller, spec: AudienceSpec, cursor: str | None = None, limit: int = 50
    ) -> ContactPage:
        """Contacts matching `spec` (every filter of an audience), in key order."""
        after = b""
        if cursor:
            after = contact_idx_or_query(cursor)
        limit = max(1, min(limit, MAX_PAGE))
        rows = await self._book.page(spec, after, limit)
        total = await self._book.count(spec)
        nxt = rows[-1].key if len(rows) == limit else None
        return ContactPage([self._item(caller, r) for r in rows], total, nxt)

    async def get(self, caller: Caller, key: str) -> ContactDetail:
        idx = contact_idx(key)
        found = await self._book.contact(idx)
        if found is None:
            raise _not_found("contact")
        standing = await self._book.states(idx)
        return ContactDetail(self._item(caller, found), tuple(standing))

    async def update(self, caller: Caller, key: str, changes: Changes) -> ContactDetail:
        """Set or clear a contact's attributes, preferences or tags (audited)."""
        self._require_write(caller)
        idx = contact_idx(key)
        self._check(changes)
        now = self._clock.time()
        found = await self._book.update(idx, changes, now)
        if not found:
            raise _not_found("contact")
        fields = sorted(
            set(changes.values)
            | changes.clear
            | ({"preferences"} if changes.preferences is not None else set())
            | ({"tags"} if changes.tags is not None else set())
        )
        await self._audit.record(
            caller.actor, "contact_attributes_updated", "contact", key, fields=",".join(fields)
        )
        return await self.get(caller, key)

    def _check(self, changes: Changes) -> None:
        for name, value in changes.values.items():
            if name == "language" and value not in self.languages:
                raise _invalid(name, "invalid_language", f"one of {', '.join(self.languages)}")
            if name == "time_zone" and (len(value) > 64 or not valid_zone(value)):
                raise _invalid(name, "invalid_time_zone", "not an IANA time zone")
            if name in ("age_band", "clinic") and not KEY.fullmatch(value):
                raise _invalid(name, f"invalid_{name}", "letters, digits and _ . : -")
        for name, keys in (("preferences", changes.preferences), ("tags", changes.tags)):
            if keys is not None and not all(KEY.fullmatch(k) for k in keys):
                raise _invalid(name, f"invalid_{name}", "keys of letters, digits and _ . : -")

    async def facets(self) -> dict[str, list[str]]:
        """Attribute values and tags in use (the panel's filter choices)."""
        return await self._book.facets()

    # -- groups ------------------------------------------------------------------------

    async def groups(self, caller: Caller) -> list[GroupRow]:
        del caller  # any caller may list them: names and counts only
        return await self._book.groups()

    async def group(self, caller: Caller, group_id: str) -> GroupRow:
        del caller
        found = await self._book.group(group_id)
        if found is None:
            raise _not_found("group")
        return found

    async def create_group(self, caller: Caller, name: str, description: str | None) -> GroupRow:
        self._require_write(caller)
        name = _name(name)
        description = self._description(description)
        now = self._clock.time()
        gid = await self._book.create_group(name, description, now)
        if gid is None:
            raise ApiError(409, "name_taken", "name: another group has this name", field="name")
        await self._audit.record(caller.actor, "contact_group_created", "contact_group", gid)
        return await self.group(caller, gid)

    def _description(self, description: str | None) -> str | None:
        if description is not None and len(description) > 500:
            raise _invalid("description", "invalid_field", "at most 500 characters")
        return description

    async def update_group(
        self, caller: Caller, group_id: str, name: str | None, description: str | None
    ) -> GroupRow:
        self._require_write(caller)
        name = None if name is None else _name(name)
        description = self._description(description)
        now = self._clock.time()
        outcome = await self._book.update_group(group_id, name, description, now)
        if outcome == "not_found":
            raise _not_found("group")
        if outcome == "name_taken":
            raise ApiError(409, "name_taken", "name: another group has this name", field="name")
        await self._audit.record(caller.actor, "contact_group_updated", "contact_group", group_id)
        return await self.group(caller, group_id)

    async def delete_group(self, caller: Caller, group_id: str) -> None:
        self._require_write(caller)
        if not await self._book.delete_group(group_id):
            raise _not_found("group")
        await self._audit.record(caller.actor, "contact_group_deleted", "contact_group", group_id)

    async def add_members(
        self,
        caller: Caller,
        group_id: str,
        keys: list[str] | None = None,
        audience: AudienceSpec | None = None,
    ) -> int:
        """Add contacts by key, or everyone in an audience (in batches, each its own
        transaction); how many joined (members already in are not counted)."""
        self._require_write(caller)
        await self.group(caller, group_id)
        now = self._clock.time()
        added = 0
        if keys is not None:
            if len(keys) > MAX_MEMBERS:
                raise _invalid("contacts", "too_many", f"at most {MAX_MEMBERS} per request")
            added += await self._add(group_id, [contact_idx(k) for k in keys], now)
        if audience is not None:
            after = b""
            while idxs := await self._book.audience_idxs(audience, after, ADD_BATCH):
                added += await self._add(group_id, idxs, now)
                after = idxs[-1]
        await self._audit.record(
            caller.actor, "contact_group_members_added", "contact_group", group_id, added=added
        )
        return added

    async def _add(self, group_id: str, idxs: list[bytes], now: float) -> int:
        n = await self._book.add_members(group_id, idxs, now)
        if n is None:
            raise _not_found("group")  # deleted meanwhile
        return n

    async def remove_members(self, caller: Caller, group_id: str, keys: list[str]) -> int:
        self._require_write(caller)
        if len(keys) > MAX_MEMBERS:
            raise _invalid("contacts", "too_many", f"at most {MAX_MEMBERS} per request")
        idxs = [contact_idx(k) for k in keys]
        n = await self._book.remove_members(group_id, idxs)
        if n is None:
            raise _not_found("group")
        await self._audit.record(
            caller.actor, "contact_group_members_removed", "contact_group", group_id, removed=n
        )
        return n

    # -- saved audiences ---------------------------------------------------------------

    async def count(self, caller: Caller, spec: AudienceSpec) -> int:
        """How many contacts an audience has now."""
        del caller
        return await self._book.count(spec)

    async def audiences(self, caller: Caller) -> list[SavedAudience]:
        rows = await self._book.audiences()
        return [SavedAudience(r, await self.count(caller, r.spec)) for r in rows]

    async def audience(self, caller: Caller, audience_id: str) -> SavedAudience:
        found = await self._book.audience(audience_id)
        if found is None:
            raise _not_found("audience")
        return SavedAudience(found, await self.count(caller, found.spec))

    async def save_audience(
        self, caller: Caller, name: str, spec: AudienceSpec, audience_id: str | None = None
    ) -> SavedAudience:
        """Create (no id) or replace a saved audience (audited)."""
        self._require_write(caller)
        name = _name(name)
        now = self._clock.time()
        aid = await self._book.save_audience(audience_id, name, spec, now)
        if aid == "!":
            raise _not_found("audience")
        if not aid:
            raise ApiError(409, "name_taken", "name: another audience has this name", field="name")
        await self._audit.record(caller.actor, "audience_saved", "audience", aid)
        return await self.audience(caller, aid)

    async def delete_audience(self, caller: Caller, audience_id: str) -> None:
        self._require_write(caller)
        if not await self._book.delete_audience(audience_id):
            raise _not_found("audience")
        await self._audit.record(caller.actor, "audience_deleted", "audience", audience_id)


def contact_idx_or_query(cursor: str) -> bytes:
    """A page cursor (the last key seen); 400 `invalid_query` when it is not one."""
    if not CONTACT_KEY.fullmatch(cursor):
        raise ApiError(
            400, "invalid_query", "cursor: next_cursor of the previous page", field="cursor"
        )
    return bytes.fromhex(cursor)
