"""Erasure of one person (MSG-11, R-DEL-1) in the cluster's PostgreSQL: the
`SharedStore` of `gateway/retention/usecase.py` on a cluster node.

SQLite's rules (`gateway/retention/erase.py`) for what the nodes share: the number's
waiting messages cancelled (`erased`); every message's number, body, reference and
callback removed (number and body become "" encrypted for their place, as the
retention sweep leaves them), its blind index emptied, its short links' tokens deleted
(the clicks stay, as on SQLite: they name a link and a message id, no person), its
Kannel dlr-url row deleted; the consent ledger and standing kept under the keyed hash
as the suppression entry, with an opt-out of everything appended if none is in force,
the entries' disclosure and note texts erased; the contact's row (number, patient
reference, language, time zone) deleted; the reviews' texts erased and their link to
the contact cut; the shared inbound from the number blanked as SQLite's (sender and
body "", index emptied), its held parts deleted; the shared patients texted at the
number, their appointments and notices as SQLite's (`erase_patients`: MRN, external
key, location and provider removed, pending notices cancelled `erased`, every
notice's variables removed), their medication schedules stopped and forgotten
(`erase_schedules`), their result events and appointment replies unlinked, and the
shared HL7 log's and write-backs' texts naming the number or one of their MRNs
(`erase_hl7`: text "" sealed, `erased_at` set). The shared `opt_outs` list is kept:
it holds only the keyed hash and the time.

One transaction holding the contact's advisory lock (the one every consent decision
about it takes), so two nodes erasing one number at once take turns: the second
finds the suppression entry in force and nothing left to erase.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

from gateway.cluster import queue_sql
from gateway.cluster.clinical_db import run_bridged
from gateway.cluster.consent_store import append, lock_contacts
from gateway.cluster.inbound import Conn
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.consent import ledger
from gateway.consent.purposes import SCOPE_ALL
from gateway.models import State
from gateway.retention.erase import Erased, Person, erase_hl7, erase_patients, erase_schedules
from gateway.retention.sweep import blank
from gateway.store.crypto import FieldCipher
from gateway.store.transitions import Transition

_WAITING = [State.QUEUED.value, State.SCHEDULED.value]


class ClusterErasure:
    def __init__(self, pool: Pool, cipher: FieldCipher, me: Callable[[], Incarnation]) -> None:
        self._pool = pool
        self._cipher = cipher
        self._me = me  # this node's incarnation now: the cancellations' events name it

    async def erase(self, person: Person, now: float, actor: str) -> Erased:
        out = Erased()
        n = out.counts
        idx, c = person.index, self._cipher
        async with self._pool.connection() as conn, conn.transaction():
            # Who a campaign reached or is to reach (cluster 17), before the contact's
            # lock: a campaign pass holding one of these rows may wait for that lock
            # (a capped purpose), so taking the rows second could deadlock with it.
            # This waits for such a pass's commit, and its message is erased below.
            cur = await conn.execute(
                "DELETE FROM campaign_recipients WHERE contact_idx = %s", (idx,)
            )
            n["shared_campaign_recipients"] = cur.rowcount
            await lock_contacts(conn, [idx])
            rows = await (
                await conn.execute(
                    "SELECT id, state FROM messages WHERE to_index = %s ORDER BY id FOR UPDATE",
                    (idx,),
                )
            ).fetchall()
            me = self._me()
            for mid, state in rows:
                if state in _WAITING:
                    t = Transition(mid, State.CANCELLED, error_code="erased")
                    await queue_sql.apply(conn, t, now, me)
                    out.cancelled.append(mid)
                await conn.execute(
                    "UPDATE messages SET to_ct = %s, body_ct = %s, reference_ct = NULL,"
                    " callback_ct = NULL, to_index = '\\x'::bytea, redacted = 2 WHERE id = %s",
                    (blank(c, mid, "to"), blank(c, mid, "body"), mid),
                )
            n["shared_messages_cancelled"] = len(out.cancelled)
            n["shared_messages"] = len(rows)
            await conn.execute(  # their short links: a token no longer leads anywhere
                "DELETE FROM link_tokens WHERE message_id = ANY(%s)", ([r[0] for r in rows],)
            )
            # Their Kannel dlr-urls and receivers as the client wrote them (SQLite's too).
            cur = await conn.execute(
                "DELETE FROM kannel_dlr WHERE message_id = ANY(%s)", ([r[0] for r in rows],)
            )
            n["shared_kannel_dlr"] = cur.rowcount

            standing = await (
                await conn.execute(
                    "SELECT opted FROM consent_state WHERE contact_idx = %s AND program = %s"
                    " AND scope = %s",
                    (idx, ledger.ALL_PROGRAMS, SCOPE_ALL),
                )
            ).fetchone()
            if standing is None or standing[0] != "out":
                entry = ledger.Entry(
                    contact_idx=idx,
                    number=person.e164,
                    decision="opt_out",
                    scope=SCOPE_ALL,
                    program=ledger.ALL_PROGRAMS,
                    source="erasure",
                    at=now,
                    actor=actor,
                )
                await append(conn, c, entry, me.node_id)  # its contacts row: deleted below
            cur = await conn.execute(
                "UPDATE consent_ledger SET disclosure_ct = NULL, note_ct = NULL"
                " WHERE contact_idx = %s",
                (idx,),
            )
            n["shared_consent_entries"] = cur.rowcount
            cur = await conn.execute("DELETE FROM contacts WHERE idx = %s", (idx,))
            n["shared_contacts"] = cur.rowcount
            # What the audiences knew of them (cluster 17).
            for table in ("contact_tags", "contact_group_members"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE contact_idx = %s".encode(),  # noqa: S608 - fixed names
                    (idx,),
                )
            cur = await conn.execute(
                "UPDATE consent_reviews SET body_ct = NULL, contact_idx = '\\x'::bytea"
                " WHERE contact_idx = %s",
                (idx,),
            )
            n["shared_consent_reviews"] = cur.rowcount
            await self._erase_inbound(conn, person, out)
            await run_bridged(conn, lambda bridged: self._erase_clinical(bridged, person, now, n))
        return out

    def _erase_clinical(
        self, conn: sqlite3.Connection, person: Person, now: float, n: dict[str, int]
    ) -> None:
        """The shared patients, appointments, notices, schedules, result events and
        replies of the number, as SQLite's erasure (`retention/erase.py`), then the
        shared HL7 log's and write-backs' texts that name the number or one of their
        MRNs."""
        c = self._cipher
        mrns, pids = erase_patients(conn, c, person, now, n, "shared_")
        erase_schedules(conn, person, pids, now, n, "shared_")
        n["shared_clinical_events"] = conn.execute(
            "UPDATE clinical_events SET contact_idx = NULL WHERE contact_idx = ?",
            (person.index,),
        ).rowcount
        n["shared_appointment_replies"] = conn.execute(
            "UPDATE appointment_replies SET contact_idx = ? WHERE contact_idx = ?",
            (b"", person.index),
        ).rowcount
        n["shared_hl7_messages"] = erase_hl7(
            conn, c, person, mrns, now, "hl7_messages", "raw_ct", "raw"
        )
        n["shared_hl7_writebacks"] = erase_hl7(  # cluster migration 23
            conn, c, person, mrns, now, "hl7_outbound", "message_ct", "message"
        )

    async def _erase_inbound(self, conn: Conn, person: Person, out: Erased) -> None:
        c = self._cipher
        ids = await (
            await conn.execute(
                "SELECT id FROM inbound WHERE sender_index = %s ORDER BY id FOR UPDATE",
                (person.index,),
            )
        ).fetchall()
        for (iid,) in ids:
            await conn.execute(
                "UPDATE inbound SET sender_ct = %s, body_ct = %s, recipient_ct = NULL,"
                " sender_index = '\\x'::bytea, redacted = 2 WHERE id = %s",
                (blank(c, iid, "sender"), blank(c, iid, "body"), iid),
            )
        out.counts["shared_inbound"] = len(ids)
        # Held parts carry no index: each sender is opened (there are few: a part set
        # is joined or expired within minutes).
        held = await (await conn.execute("SELECT id, sender_ct FROM inbound_parts")).fetchall()
        parts = [
            pid
            for pid, ct in held
            if re.sub(r"\D", "", c.decrypt(bytes(ct), pid, "sender")) == person.digits
        ]
        if parts:
            await conn.execute("DELETE FROM inbound_parts WHERE id = ANY(%s)", (parts,))
        out.counts["shared_inbound_parts"] = len(parts)
