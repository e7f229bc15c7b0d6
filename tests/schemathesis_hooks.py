"""Schemathesis hooks for `test_api_fuzz.py` (loaded through SCHEMATHESIS_HOOKS).

The fuzzer's positive phase should reach the code behind validation, so it gets data
the gateway documents as acceptable but JSON Schema cannot state: numbers that are
real (`format: phone`), and times inside the accepted window (from now to
`queue.max_schedule_days` ahead, offsets within ±14:00, expiry after the send time).
Negative data is still generated from the schema alone.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import schemathesis
from hypothesis import strategies as st

from gateway.consent.purposes import DEFAULT_POLICIES

# Valid numbers the test route carries (555-01xx is reserved for fiction in the US).
PHONES = ("+12025550147", "+12025550199", "(202) 555-0123", "202.555.0188", "+1 202 555 0100")
OFFSETS = tuple(timedelta(minutes=m) for m in (-720, -210, 0, 60, 330, 345, 840))


def _ahead(seconds: int, offset: timedelta) -> str:
    moment = datetime.fromtimestamp(time.time() + seconds, UTC)
    return moment.astimezone(timezone(offset)).isoformat()


schemathesis.openapi.format("phone", st.sampled_from(PHONES))
schemathesis.openapi.format(
    "iana-time-zone", st.sampled_from(("America/Chicago", "America/New_York", "Europe/Madrid"))
)
schemathesis.openapi.format(
    "date-time",
    st.builds(_ahead, st.integers(120, 200 * 86400), st.sampled_from(OFFSETS)),
)


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _order(message: Any) -> None:
    """An expiry the generator put before the send time goes a day after it."""
    if not isinstance(message, dict):
        return
    send_at, expires_at = _moment(message.get("send_at")), _moment(message.get("expires_at"))
    if send_at is not None and expires_at is not None and expires_at <= send_at:
        message["expires_at"] = (send_at + timedelta(days=1)).isoformat()


def _no_callback(message: Any) -> None:
    """A schema-valid `callback_url` goes: the fuzzed gateway has no webhook endpoint,
    so none is allowed there (422 `callback_not_allowed`, tested in test_webhooks.py).
    One the schema refuses stays, so negative cases stay negative."""
    if isinstance(message, dict):
        url = message.get("callback_url")
        if isinstance(url, str) and len(url) <= 2048 and re.match(r"^https?://", url):
            del message["callback_url"]


_RANK = {"critical": 0, "high": 1, "normal": 2, "bulk": 3}


def _class_within_purpose(message: Any) -> None:
    """A class above the named purpose's most urgent one goes (422
    `priority_not_allowed` across two fields, tested in test_consent_policy.py)."""
    if not isinstance(message, dict):
        return
    purpose, priority = message.get("purpose"), message.get("priority")
    if not (isinstance(purpose, str) and isinstance(priority, str)):
        return
    if purpose in _HIGHEST and priority in _RANK and _RANK[priority] < _RANK[_HIGHEST[purpose]]:
        del message["priority"]


_HIGHEST = {p.value: policy.highest for p, policy in DEFAULT_POLICIES.items()}


def _rule_class(path: str, body: Any) -> None:
    """A reminder rule naming no purpose is for `appointment` (issue 13): a class above
    that purpose's most urgent goes, as `_class_within_purpose` does for a named one."""
    if not (path.startswith("/api/v1/reminder-rules") and isinstance(body, dict)):
        return
    priority = body.get("priority")
    above = isinstance(priority, str) and _RANK.get(priority, 9) < _RANK["high"]
    if "purpose" not in body and above:  # appointment's most urgent class is high
        del body["priority"]


def _disclosed(path: str, body: Any) -> None:
    """A marketing opt-in needs the text the patient agreed to (MSG-2; 422
    `disclosure_required`, tested in test_consent_api.py): a valid one gets one."""
    if path != "/api/v1/consents" or not isinstance(body, dict) or body.get("disclosure"):
        return
    if body.get("scope") in ("kind:marketing", "purpose:marketing"):
        body["disclosure"] = "Reply YES for news from the clinic. Msg & data rates may apply."


def _end_after_start(path: str, body: Any) -> None:
    """An appointment ending before it starts goes without its end (422 `invalid_end`
    across two fields, tested in test_appointments_api.py)."""
    if path != "/api/v1/appointments" or not isinstance(body, dict):
        return
    try:
        start = datetime.fromisoformat(str(body.get("start")))
        end = datetime.fromisoformat(str(body.get("end")))
        if end < start:
            del body["end"]
    except (ValueError, TypeError):
        return


def _medication(path: str, body: Any) -> None:
    """A schedule ending before it starts gets its end moved to its start (422
    `invalid_dates`), and a drug name goes (422 `drug_names_not_allowed` where
    `medication.allow_drug_names` is false); both tested in test_medication_api.py."""
    if path != "/api/v1/medications" or not isinstance(body, dict):
        return
    start, end = body.get("start_date"), body.get("end_date")
    if isinstance(start, str) and isinstance(end, str) and end < start:
        body["end_date"] = start
    if isinstance(body.get("label"), str):
        del body["label"]


def _analytics_query(path: str, query: Any) -> None:
    """A schema-valid range of days runs forward and spans at most three years, and a
    series by a dimension names a key (400 `invalid_range`, `range_too_long`,
    `invalid_query` across two parameters, tested in test_analytics_api.py). A query
    with any schema-invalid value is left as it is, so negative cases stay negative."""
    if not path.startswith("/api/v1/analytics/") or not isinstance(query, dict):
        return
    days: dict[str, date] = {}
    for name in ("from", "to"):
        if name not in query:
            continue
        value = query[name]
        if not (isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value)):
            return
        try:
            days[name] = date.fromisoformat(value)
        except ValueError:
            return
    dimension = query.get("dimension")
    if dimension is not None and dimension not in _DIMENSIONS:
        return
    if days:
        today = date.today()
        last = days.get("to", max(days.get("from", today), today))
        first = days.get("from", last - timedelta(days=29))
        first, last = min(first, last), max(first, last)
        first = max(first, last - timedelta(days=900))
        query.update({k: v.isoformat() for k, v in (("from", first), ("to", last)) if k in query})
        if "from" in query and "to" not in query and last != max(first, today):
            query["to"] = last.isoformat()
    if dimension not in (None, "total") and not query.get("key"):
        query["key"] = "main"


_DIMENSIONS = ("total", "campaign", "template", "rule", "clinic", "purpose", "route")


@schemathesis.hook
def map_query(context: schemathesis.HookContext, query: Any) -> Any:
    _analytics_query(context.operation.path, query)
    return query


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    _order(body)
    _disclosed(context.operation.path, body)
    _end_after_start(context.operation.path, body)
    _medication(context.operation.path, body)
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        for item in body["messages"]:
            _order(item)
    return body


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Any, kwargs: Any) -> None:
    """Every phase (the coverage phase's bodies bypass `map_body`)."""
    body = case.body
    _analytics_query(case.operation.path, case.query)
    _no_callback(body)
    _class_within_purpose(body)
    _rule_class(case.operation.path, body)
    _disclosed(case.operation.path, body)
    _end_after_start(case.operation.path, body)
    _medication(case.operation.path, body)
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        for item in body["messages"]:
            _no_callback(item)
            _class_within_purpose(item)
