"""The endpoint table's rows for replies to appointment texts and the staff
worklist (`gateway.api.replies`)."""

from __future__ import annotations

from gateway.api import replies as r
from gateway.api.endpoint import INVALID_QUERY, Endpoint
from gateway.api.openapi import Answer, Query

# -- replies to appointment texts and the staff worklist (issue 13) ------------------
REPLY_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/api/v1/replies",
        r.list_replies,
        "read",
        "Patients' replies to appointment texts; state=open is the staff worklist"
        " (reschedule and cancel requests without a write-back, unmatched and unclear"
        " replies), oldest first. Numbers masked",
        None,
        r.ReplyPage,
        query=(
            Query(
                "state",
                "open (the worklist), done or resolved; all if absent",
                {"type": "string", "enum": ["open", "done", "resolved"]},
            ),
            Query("limit", "at most this many", {"type": "integer", "minimum": 1, "maximum": 500}),
        ),
        answers=(INVALID_QUERY,),
    ),
    Endpoint(
        "POST",
        f"/api/v1/replies/{r.REPLY_ID}/resolve",
        r.resolve_reply,
        "send",
        "Take a reply off the worklist, once (audited)",
        r.ResolveRequest,
        r.ReplyView,
        answers=(
            Answer(404, "`not_found`: no reply with this id"),
            Answer(409, "`not_open`: the reply is not on the worklist (already resolved)"),
        ),
    ),
)
