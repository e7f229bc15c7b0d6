"""`smsgw store migrate` and the campaigns and surveys (cluster migrations 18 and 20:
the twins), so a campaign half sent goes on from where it was and an open survey
session takes its next answer on any node.

Campaigns, their handled recipients, surveys (every version), sessions and answers
are copied as they are: ids, states, ciphertexts (a campaign's text is bound to its
id) and the answers' seqs kept, the answers' numbering going on after them
(`migrate_copy.set_sequences`). A handled recipient keeps its outcome and message,
so no node sends to it again.

SQLite's runner walks a campaign's audience after its `cursor`; a cluster's passes
share out recipient rows written when the campaign starts running (`outcome` NULL
until handled). So a campaign running or paused gets the rest of its audience as
open recipients (`enrol_rest`): the contacts after its cursor, as SQLite would have
gone on, the audience read from the copied contacts, groups and tags. A scheduled
campaign gets its recipients when it starts running, as one created on the cluster.
"""

from __future__ import annotations

import sqlite3

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.campaigns.model import CampaignState
from gateway.campaigns.store import audience_of
from gateway.cluster.audience_sql import audience_query
from gateway.cluster.migrate_copy import TableCopy
from gateway.cluster.migrate_samples import sample_column
from gateway.store import crypto

# Running or paused after it ran: SQLite's cursor says where it was.
_GOING_ON = (CampaignState.RUNNING.value, CampaignState.PAUSED.value)


def copies(node_id: str) -> tuple[TableCopy, ...]:
    """What is copied, in this order; a recipient handled on SQLite is `node_id`'s."""
    return (
        TableCopy("campaigns", "campaigns", ("id",), left_out=("cursor",)),
        TableCopy(
            "campaign_recipients",
            "campaign_recipients",
            ("campaign_id", "contact_idx"),
            fixed={"node_id": node_id},
            counted="outcome IS NOT NULL",  # `enrol_rest` adds the open ones
        ),
        TableCopy("surveys", "surveys", ("id", "version")),
        TableCopy("survey_sessions", "survey_sessions", ("id",)),
        TableCopy("survey_answers", "survey_answers", ("seq",)),
    )


async def enrol_rest(src: sqlite3.Connection, conn: AsyncConnection[TupleRow]) -> int:
    """Each running or paused campaign's audience after its cursor, as its open
    recipients (those it has already handled kept as they are), and its audience size
    counted as a cluster counts it; the number of recipients enrolled."""
    rows = src.execute(
        "SELECT id, spec, cursor FROM campaigns WHERE state IN (?, ?) ORDER BY id", _GOING_ON
    ).fetchall()
    enrolled = 0
    async with conn.transaction():
        for campaign_id, spec, cursor in rows:
            query, params = audience_query(audience_of(spec), bytes(cursor), None)
            cur = await conn.execute(
                "INSERT INTO campaign_recipients (campaign_id, contact_idx)"  # noqa: S608 - placeholders only
                f" SELECT %s, idx FROM ({query}) a ON CONFLICT DO NOTHING".encode(),
                (campaign_id, *params),
            )
            enrolled += cur.rowcount
            await conn.execute(
                "UPDATE campaigns SET audience_size = (SELECT count(*) FROM campaign_recipients"
                " WHERE campaign_id = %s) WHERE id = %s",
                (campaign_id, campaign_id),
            )
    return enrolled


async def check_samples(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    source: crypto.FieldCipher,
    target: crypto.FieldCipher,
    sample: int,
) -> tuple[list[str], list[str]]:
    """(lines, problems): a sample of the campaigns' texts decrypted on both sides and
    compared (nothing of the surveys is encrypted), and the open recipients counted."""
    line, problems = await sample_column(
        src, conn, (source, target), sample, "campaigns", "id", "content_ct", "content"
    )
    lines = [] if problems else [line]
    cur = await conn.execute("SELECT count(*) FROM campaign_recipients WHERE outcome IS NULL")
    row = await cur.fetchone()
    lines.append(f"campaign_recipients: {row[0] if row else 0} still to send, after the cursors")
    return lines, problems
