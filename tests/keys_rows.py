"""A store with something in every encrypted column, each written by the code that
writes it in the gateway (the accept path, the inbound sink, the consent ledger, the
appointment rows, the HL7 tables, the quarantine, the panel's TOTP, medication
schedules, Kannel's dlr rows): for the key rotation tests and the catalog check."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from drivers.base import InboundPart, InboundSms
from gateway.admin.accounts import Accounts
from gateway.app import Gateway
from gateway.campaigns import store as campaigns_sql
from gateway.campaigns.model import CampaignSpec
from gateway.clinical import notices, outbound
from gateway.consent import ledger
from gateway.contacts.audience import AudienceSpec
from gateway.hl7 import messages_sql
from gateway.integrations import kannel, kannel_dlr
from gateway.integrations.dlr_wishes import LocalDlrWishes
from gateway.keys.catalog import CATALOG
from gateway.medication import schedules
from gateway.medication.timing import DoseSchedule
from gateway.panel_users import Role
from gateway.store import consent_sql, crypto
from gateway.store.panel_sql import AdminRepo
from gateway.store.quarantine import Quarantine
from gateway.store.store import Store
from tests import clinical_rows
from tests.appointment_rows import book
from tests.conftest import CANARY_BODY, CANARY_NUMBER, accept

# Distinctive plaintexts: none may be found in the database files in the clear.
SECRETS = {
    "reference": "CANARY-REF-7731",
    "callback": "https://ehr.example/cb/CANARY-CB-5512",
    "inbound": "CANARY inbound reply 4417",
    "part": "CANARY part one 9921",
    "record": "CANARY undecodable 0042",
    "disclosure": "CANARY disclosure text 3390",
    "note": "CANARY staff note 6605",
    "patient_ref": "CANARY-PREF-8812",
    "variables": "CANARY clinic variable 2219",
    "hl7": "CANARY hl7 raw 1187",
    "hl7_out": "CANARY hl7 out 5521",
    "label": "CANARY drug label 4471",
    "dlr_url": "https://dlr.example/CANARY-DLR-3318",
    "campaign": "CANARY campaign text 6120",
}


def webhook_sections(tmp_path: Path) -> dict[str, Any]:
    """A webhook endpoint (messages may name a callback URL at its origin only)."""
    secret = tmp_path / "hook.secret"
    secret.write_text("s" * 32)
    secret.chmod(0o600)
    hook = {"name": "ehr", "url": "https://ehr.example/cb", "secret_file": str(secret)}
    return {"webhooks": [hook]}


async def fill(gw: Gateway, messages: int = 5) -> list[str]:
    """Write a row to every encrypted table; the ids of the messages accepted. A
    callback URL is sealed only if the config has a webhook (`webhook_sections`)."""
    store = gw.store
    cipher = store.cipher
    assert cipher is not None
    now = gw.clock.time()
    ids = [
        await accept(
            gw,
            body=f"{CANARY_BODY} #{i}",
            reference=SECRETS["reference"],
            callback_url=SECRETS["callback"] if gw.config.webhooks else None,
        )
        for i in range(messages)
    ]
    route = next(iter(gw.routes))
    await gw.sink.inbound(route, InboundSms(CANARY_NUMBER, SECRETS["inbound"], "4000"))
    await gw.sink.inbound(
        route,
        InboundSms(CANARY_NUMBER, SECRETS["part"], "4000", part=InboundPart(9, 8, 3, 1)),
    )
    assert await Quarantine(store).hold(route, "modem1", SECRETS["record"], now) is not None
    accounts = Accounts(AdminRepo(store), gw.audit, gw.clock, gw.config.admin)
    user = await accounts.create_user("ada", Role.ADMIN, "correct horse battery 9", "console")
    await AdminRepo(store).set_totp_secret(user.id, "JBSWY3DPEHPK3PXP")
    idx = store.blind_index(CANARY_NUMBER)
    entry = ledger.Entry(
        contact_idx=idx,
        number=CANARY_NUMBER,
        decision="opt_in",
        scope="all",
        program="*",
        source="api",
        at=now,
        disclosure=SECRETS["disclosure"],
        note=SECRETS["note"],
    )
    await store.writer.run(lambda conn: ledger.append(conn, cipher, entry))
    changes = consent_sql.ContactChanges(patient_ref=SECRETS["patient_ref"])
    await store.writer.run(
        lambda conn: consent_sql.put_contact(conn, cipher, idx, CANARY_NUMBER, changes, now)
    )
    booked = await book(gw, CANARY_NUMBER)
    notice = notices.Notice(
        kind=notices.NoticeKind.RESULT_AVAILABLE,
        contact_idx=idx,
        template="results_ready",
        purpose="results",
        due_at=now + 3600,
        variables={"clinic": SECRETS["variables"]},
        patient_id=booked.patient_id,
    )
    hl7_row = messages_sql.Row(
        id="hl7_" + "0" * 16,
        interface="ehr",
        sending_app="EHR",
        sending_facility="HOSP",
        control_id="CTRL1",
        msg_type="SIU",
        event="S12",
        version="2.5.1",
        msg_time="20261206083000",
        charset="UNICODE UTF-8",
        charset_flag=None,
        text=f"MSH|^~\\&|EHR|HOSP|||20261206083000||SIU^S12|CTRL1|P|2.5.1\rNTE|1||{SECRETS['hl7']}",
        state="mapped",
        error_code=None,
        error_text=None,
        error_location=None,
        ack_code="AA",
        ack="MSH|^~\\&|SMSGW||EHR|HOSP|20261206083000||ACK|A1|P|2.5.1\rMSA|AA|CTRL1",
    )
    schedule = schedules.NewSchedule(
        source="api",
        ext_index=None,
        patient_id=booked.patient_id,
        contact_idx=idx,
        dose=DoseSchedule(("08:00",), "UTC", dt.date(2026, 12, 6)),
        label=SECRETS["label"],
        language=None,
        actor="console",
    )

    by_feed = clinical_rows.Booking(start=now + 2 * 86400, number=CANARY_NUMBER, mrn="MRN43")
    feed = clinical_rows.context(store, now, gw.clinical_hooks)

    def clinical(conn: sqlite3.Connection) -> None:
        clinical_rows.book(conn, feed, by_feed)  # provider and clinic, sealed
        notices.schedule(conn, cipher, notice, now)
        messages_sql.put(conn, cipher, hl7_row, now)
        outbound.enqueue(
            conn, cipher, "ehr-out", f"MSH|{SECRETS['hl7_out']}", "OUT1", now, kind="reply"
        )
        schedules.insert(conn, cipher, schedule, now)

    await store.writer.run(clinical)
    plan = kannel.SendPlan(
        receivers=(CANARY_NUMBER,),
        body="x",
        route=None,
        priority=None,
        category=None,
        validity_minutes=None,
        deferred_minutes=None,
        dlr_mask=31,
        dlr_url=SECRETS["dlr_url"],
        sender="4000",
    )
    wish = kannel_dlr.wish_of(plan, CANARY_NUMBER, "kannel")
    await store.insert([LocalDlrWishes(store).statement(ids[0], wish, now)])
    text = CampaignSpec("c", AudienceSpec(), "informational", text=SECRETS["campaign"])
    await store.writer.run(  # i15-campaigns: a campaign's free text
        lambda conn: campaigns_sql.insert(
            conn, cipher, campaigns_sql.new_id(), text, "bulk", 1.0, "console", now
        )
    )
    return ids


async def open_every_ciphertext(store: Store) -> dict[int, int]:
    """Open every ciphertext of every catalogued column with the store's cipher (a
    failure raises); how many there are per key generation."""
    cipher = store.cipher
    assert cipher is not None
    counts: dict[int, int] = {}
    for s in CATALOG:
        for column, name in s.columns:
            rows = await store.reader.all(
                f"SELECT {s.row_id}, {column} FROM {s.table} WHERE {column} IS NOT NULL"  # noqa: S608
            )
            for row_id, blob in rows:
                cipher.decrypt(bytes(blob), row_id, name)
                gen = crypto.header_generation(bytes(blob))
                assert gen is not None
                counts[gen] = counts.get(gen, 0) + 1
    return counts
