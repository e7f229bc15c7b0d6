"""What a campaign or a compose would do, before anything is queued.

`judge` asks the send policy about every recipient of an audience (or one number) the
way an accept does: each becomes a message through `Intake.prepare` (number, class,
route, body checks) and `Intake.judge` (consent, opt-outs, quiet hours, caps, read in
one `GroupView` per batch, each judged message counting against the next), and is then
dropped. `texts` renders the template's variants in the site's language for the
encoding and segment counts, or lints a free text with the template lint.

Both run on a read-only connection of their own, in a worker thread (`ReadOnly`), so a
preview of a large audience never holds the writer, and a read started after a commit
sees it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from drivers.text import BodyTooLong, split
from gateway.campaigns.model import Judgement
from gateway.clinical.rendering import TemplateMissing
from gateway.consent.ledger import contact_row_id
from gateway.contacts.audience import AudienceSpec, audience_batches, audience_size
from gateway.errors import ApiError
from gateway.intake import Intake, Prepared, SendRequest
from gateway.store.crypto import FieldCipher
from gateway.templates import lint
from gateway.templates import store as templates
from gateway.templates.renderer import TemplateRenderer, fallback_chain
from gateway.templates.store import Version

T = TypeVar("T")
BATCH = 500
PLACEHOLDER = "-"  # the body judged when the text cannot be rendered (segments aside,
# the policy's verdict does not depend on it)


@dataclass(frozen=True, slots=True)
class Text:
    variant: str | None
    text: str | None  # None: it cannot be rendered (see the problems)
    characters: int
    encoding: str | None
    segments: int


@dataclass(frozen=True, slots=True)
class Texts:
    texts: tuple[Text, ...]
    problems: tuple[lint.Problem, ...]
    language: str | None

    @property
    def sample(self) -> str:
        return next((t.text for t in self.texts if t.text), PLACEHOLDER)


class ReadOnly:
    """A read-only connection per call, in a worker thread; one call at a time."""

    def __init__(self, path: Path) -> None:
        self._uri = f"file:{path}?mode=ro"
        self._lock = asyncio.Lock()

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(self._run, job)

    def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        conn = sqlite3.connect(self._uri, uri=True, isolation_level=None)
        try:
            conn.execute("BEGIN")  # one snapshot for the whole preview
            return job(conn)
        finally:
            conn.close()


def _measure(variant: str | None, text: str, max_segments: int) -> Text:
    try:
        plan = split(text, max_segments=max_segments)
    except BodyTooLong:
        return Text(variant, text, len(text), None, 0)
    return Text(variant, text, len(text), plan.encoding.value, plan.segments)


def texts(
    conn: sqlite3.Connection,
    renderer: TemplateRenderer,
    *,
    template: str | None,
    text: str | None,
    purpose: str,
    variables: Mapping[str, str],
    max_segments: int,
    allow_drug_names: bool,
) -> Texts:
    """Each variant rendered in the site's language, or the free text, measured; the
    template lint's problems with the free text (a template passed it when saved)."""
    if template is None:
        body = text or ""
        bodies = [lint.Body(None, body)]
        problems = lint.lint(
            bodies, (), purpose, renderer.site_language, allow_drug_names=allow_drug_names
        )
        return Texts((_measure(None, body, max_segments),), tuple(problems), None)
    for tag in fallback_chain(None, renderer.site_language):
        found = templates.active(conn, template, tag)
        if found is not None:
            return template_texts(found, renderer, variables, max_segments)
    return template_texts(None, renderer, variables, max_segments)


def template_texts(
    found: Version | None,
    renderer: TemplateRenderer,
    variables: Mapping[str, str],
    max_segments: int,
) -> Texts:
    """Each variant of `found` (the template's active version in the site's language,
    from either backend) rendered and measured."""
    if found is None:
        problem = lint.Problem("template_missing", "no active version of the template")
        return Texts((), (problem,), None)
    out: list[Text] = []
    problems = []
    for v in found.draft.variants:
        try:
            rendered = renderer.fill(found, variables, v.name)
        except TemplateMissing as e:
            out.append(Text(v.name, None, 0, None, 0))
            problems.append(lint.Problem("render", str(e), v.name))
            continue
        out.append(_measure(v.name, rendered.text, max_segments))
    return Texts(tuple(out), tuple(problems), found.draft.language)


def judge(
    conn: sqlite3.Connection,
    intake: Intake,
    cipher: FieldCipher,
    request: SendRequest,
    now: float,
    *,
    audience: AudienceSpec | None,
    limit: int,
    until_allowed: bool = False,
) -> Judgement:
    """The policy's verdict on `request` sent to each recipient of `audience` (None:
    to `request.to` alone), counted: at most `limit` recipients judged, or until the
    first one allowed if `until_allowed`."""
    blocked: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    allowed = judged = 0

    def verdicts(numbers: list[str | None]) -> None:
        nonlocal allowed, judged
        prepared: list[Prepared] = []
        for number in numbers:
            judged += 1
            if number is None:
                skipped["no_number"] += 1
                continue
            try:
                prepared.append(intake.prepare(to_number(request, number), None, now))
            except ApiError as e:
                skipped[e.code] += 1
        if not intake.policy.enabled:
            allowed += len(prepared)
            return
        recipients = [(p.message.to_index, p.purpose) for p in prepared if p.message.to_index]
        view = intake.policy.view(conn, recipients, now)
        for p in prepared:
            verdict = intake.judge(view, p).message
            reason = verdict.blocked
            if reason is None:
                allowed += 1
                if verdict.held_for is not None:
                    waiting[verdict.held_for] += 1
            else:
                blocked[reason] += 1

    if audience is None:
        verdicts([request.to])
        return Judgement(1, judged, allowed, dict(blocked), dict(skipped), dict(waiting))
    size = audience_size(conn, audience)
    for batch in audience_batches(conn, audience, BATCH):
        batch = batch[: max(0, limit - judged)]
        verdicts([_number(conn, cipher, idx) for idx in batch])
        if judged >= limit or (until_allowed and allowed):
            break
    return Judgement(size, judged, allowed, dict(blocked), dict(skipped), dict(waiting))


def _number(conn: sqlite3.Connection, cipher: FieldCipher, idx: bytes) -> str | None:
    r = conn.execute("SELECT number_ct FROM contacts WHERE idx = ?", (idx,)).fetchone()
    return None if r is None else cipher.decrypt(r[0], contact_row_id(idx), "number")


def to_number(request: SendRequest, number: str) -> SendRequest:
    """`request` to one recipient of the audience."""
    return SendRequest(
        to=number,
        body=request.body,
        priority=request.priority,
        send_at=request.send_at,
        expires_at=request.expires_at,
        category=request.category,
        purpose=request.purpose,
    )


def moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
