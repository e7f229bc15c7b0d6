"""The application layer of a `Gateway`, built lazily from its parts.

`Gateway` (gateway/app.py) takes these use cases and runners as its own attributes
(`gateway.usecases`, `gateway.campaigns`, ...): each is built from the store, config
and clock the first time it is asked for, and once.
"""

from __future__ import annotations

import functools
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from drivers.clock import Clock
from gateway.analytics.rollup import Rollup
from gateway.analytics.usecase import Analytics
from gateway.campaigns.backend import CampaignStore
from gateway.campaigns.runner import CampaignRunner  # i15-campaigns
from gateway.campaigns.usecase import Campaigns  # i15-campaigns
from gateway.clinical.commands import ClinicalHooks
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.clinical.rendering import Renderer
from gateway.clinical.runner import NoticeRunner
from gateway.config import Config
from gateway.contacts.book import ContactBook
from gateway.contacts.usecase import Contacts
from gateway.intake import Intake
from gateway.integrations.dlr_wishes import DlrWishes, LocalDlrWishes
from gateway.integrations.outbox import Outbox
from gateway.keys.rekey import RekeyJob
from gateway.links.link_store import LinkStore, LocalLinkStore
from gateway.links.usecase import Links
from gateway.medication.usecase import Medications
from gateway.metrics import Metrics
from gateway.panel_store import PanelStore
from gateway.reminders.planner import Planner
from gateway.reminders.usecase import ReminderRules
from gateway.replies.usecase import Replies
from gateway.results.settings import Settings as ClinicalSettings
from gateway.results.usecase import ResultEvents
from gateway.retention.job import NOTHING_SHARED as NOTHING_SHARED_SWEEP
from gateway.retention.job import Retention, Sweep
from gateway.retention.usecase import NOTHING_SHARED, Erasures, SharedStore
from gateway.scheduler import Scheduler
from gateway.sink import GatewaySink
from gateway.store.audit_log import AuditTrail
from gateway.store.inbound_reads import InboundReads, LocalInboundReads
from gateway.store.message_reads import LocalReads, MessageReads
from gateway.store.panel_sql import AdminRepo
from gateway.store.store import Store
from gateway.surveys.inbound import InboundSurveys, SharedInboundSurveys, SurveyStep
from gateway.surveys.runner import TimeoutRunner
from gateway.surveys.usecase import Surveys
from gateway.templates.renderer import TemplateRenderer
from gateway.templates.usecase import Templates
from gateway.tokens import TokenCache
from gateway.usecases import (
    Activity,
    Appointments,
    AuditLog,
    Consent,
    Deliveries,
    Inbound,
    Messages,
    Status,
    Tokens,
    Undecodable,
    UseCases,
)
from gateway.usecases.audit_log import AuditSource, LocalAudit

if TYPE_CHECKING:
    from gateway.cluster.node import ClusterNode
    from gateway.consent.ledger_store import ConsentLedger


class UseCaseWiring:
    """The use cases and runners of a `Gateway`, each built on first use from the
    parts below (the `Gateway` dataclass's fields and its `not_ready`)."""

    config: Config
    clock: Clock
    store: Store
    metrics: Metrics
    scheduler: Scheduler
    intake: Intake
    tokens: TokenCache
    sink: GatewaySink
    audit: AuditTrail
    outbox: Outbox
    accepting: bool
    clinical_hooks: ClinicalHooks
    renderer: Renderer | None
    notice_bell: threading.Event
    cluster: ClusterNode | None
    not_ready: Callable[[], str | None]

    @functools.cached_property
    def rekey(self) -> RekeyJob:
        """Re-encryption after a key rotation (`gateway/keys/rekey.py`)."""
        return RekeyJob(self.store, self.clock, self.config.store.rekey_rows_per_second, self.audit)

    @functools.cached_property
    def clinical_db(self) -> ClinicalDb:
        """Where patients, appointments, notices, reminder rules and templates live:
        this node's store, or on a cluster the shared PostgreSQL (one for every use
        case, so the notice runner hears what they plan)."""
        if self.cluster is None:
            return LocalClinicalDb(self.store)
        from gateway.cluster.clinical_db import ClusterClinicalDb  # here: psycopg is optional

        queue = self.cluster.queue
        return ClusterClinicalDb(
            queue.pool, lambda: queue.cipher, self.cluster.keys, self.cluster.clinical_threads
        )

    @functools.cached_property
    def planner(self) -> Planner:
        """Plans reminders on every appointment change (installed in `clinical_hooks`)."""
        return Planner(self.notice_bell)

    @functools.cached_property
    def reminder_rules(self) -> ReminderRules:
        """The reminder rules' use cases (API `/reminder-rules`, panel page)."""
        return ReminderRules(
            store=self.store,
            clock=self.clock,
            audit=self.audit,
            policy=self.intake.policy,
            planner=self.planner,
            db=self.clinical_db,
        )

    def notice_runner(self, renderer: Renderer) -> NoticeRunner:
        """A runner of the due clinical notices (`start()` runs one with `renderer`):
        on a cluster, of the shared notices, safe beside the other nodes' runners."""
        db = self.clinical_db
        if self.cluster is not None:
            from gateway.cluster.clinical_db import ClusterClinicalDb
            from gateway.cluster.notice_runner import SharedNoticeRunner

            assert isinstance(db, ClusterClinicalDb)
            return SharedNoticeRunner(
                db,
                self.store,
                self.usecases.messages,
                renderer,
                self.clock,
                horizon=self.config.queue.max_schedule_days * 86400.0,
                bell=self.notice_bell,
                metrics=self.metrics,
            )
        return NoticeRunner(
            self.store,
            self.usecases.messages,
            renderer,
            self.clock,
            horizon=self.config.queue.max_schedule_days * 86400.0,
            bell=self.notice_bell,
            metrics=self.metrics,
        )

    # -- campaigns and compose (issue 15, i15-campaigns) ---------------------------------
    @functools.cached_property
    def campaign_runner(self) -> CampaignRunner:
        """Feeds running campaigns into the queue at their rates (`start()` runs it)."""
        horizon = self.config.queue.max_schedule_days * 86400.0
        shared = None
        if self.cluster is not None:  # the campaigns every node shares
            from gateway.cluster.campaign_feed import ClusterCampaignFeed  # psycopg is optional

            queue = self.cluster.queue
            shared = ClusterCampaignFeed(
                queue.pool,
                queue.cipher,
                self.usecases.messages,
                self.config.cluster.node_id,
                self.templates.renderer,
                horizon=horizon,
                keys=self.cluster.keys,
            )
        return CampaignRunner(
            self.store,
            self.usecases.messages,
            self.renderer or self.templates.renderer,
            self.clock,
            horizon=horizon,
            shared=shared,
        )

    @functools.cached_property
    def campaigns(self) -> Campaigns:
        """Campaigns and compose-and-send (API `/campaigns`, panel Campaigns, Compose)."""
        return Campaigns(
            config=self.config.campaigns,
            store=self.store,
            intake=self.intake,
            messages=self.usecases.messages,
            scheduler=self.scheduler,
            renderer=self.templates.renderer,
            clock=self.clock,
            audit=self.audit,
            max_segments=self.config.queue.max_segments,
            horizon=self.config.queue.max_schedule_days * 86400.0,
            allow_drug_names=self.config.templates.allow_drug_names,
            wake=self.campaign_runner.wake,
            backend=self._shared_campaigns(),
            templates=self.templates.source if self.cluster is not None else None,
        )

    def _shared_campaigns(self) -> CampaignStore | None:
        """On a cluster, the campaigns every node shares."""
        if self.cluster is None:
            return None
        from gateway.cluster.campaigns import ClusterCampaigns  # here: psycopg is optional

        queue, membership = self.cluster.queue, self.cluster.membership
        return ClusterCampaigns(queue.pool, queue.cipher, self.audit, lambda: membership.me)

    # -- results and medication notices (issue 13, i13-results) --------------------------
    @functools.cached_property
    def medications(self) -> Medications:
        """Medication schedules (API) and their dose top-up; registers the `[results]`
        and `[medication]` settings the clinical commands read. On a cluster the
        schedules, events and notices are the shared ones (`clinical_db`)."""
        site = ClinicalSettings(self.config.results, self.config.medication)
        return Medications(
            store=self.store,
            clock=self.clock,
            audit=self.audit,
            hooks=self.clinical_hooks,
            site=site,
            db=self.clinical_db,
        )

    @functools.cached_property
    def result_events(self) -> ResultEvents:
        self.medications  # noqa: B018  # registers the site's settings with the store
        return ResultEvents(
            store=self.store,
            clock=self.clock,
            audit=self.audit,
            hooks=self.clinical_hooks,
            db=self.clinical_db,
        )

    @functools.cached_property
    def panel_csrf_key(self) -> bytes:
        """The key of the login form's CSRF token: this process's own, or on a cluster
        one every node derives alike, so a form served by one node posts to another."""
        if self.cluster is None:
            return secrets.token_bytes(32)
        return self.cluster.panel.csrf_key()

    @functools.cached_property
    def admin_repo(self) -> PanelStore:
        """The panel's users and sessions: this node's tables, or on a cluster the
        shared ones."""
        return AdminRepo(self.store) if self.cluster is None else self.cluster.panel

    def _shared_ledger(self) -> ConsentLedger | None:
        """On a cluster, the consent ledger every node shares."""
        if self.cluster is None:
            return None
        from gateway.cluster.consent_wiring import shared_ledger

        return shared_ledger(self.cluster, self.config)

    def _audit_source(self) -> AuditSource:
        """What the panel's audit page reads and checks: this node's trail, or on a
        cluster every node's chain and the anchors in the shared store."""
        if self.cluster is None:
            return LocalAudit(self.audit)
        from gateway.cluster.audit_reads import ClusterAuditReads

        return ClusterAuditReads(self.cluster.pool, self.cluster.shipper)

    @functools.cached_property
    def reads(self) -> MessageReads:
        """Where the message list, details and queue counts are read."""
        return LocalReads(self.store) if self.cluster is None else self.cluster.reads

    @functools.cached_property
    def dlr_wishes(self) -> DlrWishes:
        """Where Kannel dlr-urls are kept with their messages: this node's store, or
        the shared PostgreSQL beside the shared queue."""
        return LocalDlrWishes(self.store) if self.cluster is None else self.cluster.dlr_wishes

    @functools.cached_property
    def inbound_reads(self) -> InboundReads:
        """Where inbound messages are read: this node's store, or the shared table."""
        return LocalInboundReads(self.store) if self.cluster is None else self.cluster.inbound_reads

    @functools.cached_property
    def usecases(self) -> UseCases:
        """The application layer every front end calls (`gateway/usecases/`)."""
        messages = Messages(
            config=self.config,
            store=self.store,
            intake=self.intake,
            scheduler=self.scheduler,
            clock=self.clock,
            metrics=self.metrics,
            audit=self.audit,
            accepting=lambda: self.accepting,
            cluster=None if self.cluster is None else self.cluster.queue,
            reads=self.reads,
        )
        status = Status(
            reads=self.reads,
            scheduler=self.scheduler,
            clock=self.clock,
            accepting=lambda: self.accepting,
            not_ready=self.not_ready,
            shared=self.cluster is not None,
        )
        return UseCases(
            messages,
            Inbound(reads=self.inbound_reads, audit=self.audit),
            status,
            Tokens(
                store=self.store,
                audit=self.audit,
                clock=self.clock,
                forget=self.tokens.forget,
                table=None if self.cluster is None else self.cluster.tokens,
            ),
            Activity(store=self.store, log=None if self.cluster is None else self.cluster.reads),
            Deliveries(outbox=self.outbox, audit=self.audit),
            Undecodable(sink=self.sink),
            AuditLog(trail=self.audit, source=self._audit_source()),
            Consent(
                config=self.config,
                store=self.store,
                clock=self.clock,
                audit=self.audit,
                ledger=self._shared_ledger(),
            ),
            Appointments(
                config=self.config.appointments,
                region=self.config.queue.default_region,
                store=self.store,
                clock=self.clock,
                audit=self.audit,
                hooks=self.clinical_hooks,
                db=self.clinical_db,
            ),
            Replies(self.store, self.clock, self.audit, self.clinical_db),
        )

    # -- surveys (issue 15, i15-surveys) -------------------------------------------------
    @functools.cached_property
    def surveys(self) -> Surveys:
        """SMS surveys (`gateway/surveys/`): API `/surveys`, the panel's pages."""
        return Surveys(
            store=self.store,
            clock=self.clock,
            audit=self.audit,
            messages=self.usecases.messages,
            region=self.config.queue.default_region,
            wake=self.survey_timeouts.wake,
            db=self.clinical_db,
            book=self._shared_contacts(),
        )

    @functools.cached_property
    def survey_timeouts(self) -> TimeoutRunner:
        return TimeoutRunner(self.clinical_db, self.clock)

    @functools.cached_property
    def survey_answers(self) -> SurveyStep:
        """Answers matched in each inbound's transaction (wired into the sink); on a
        cluster, on the shared sessions after the inbound's commit."""
        local = InboundSurveys(
            self.store,
            self.config.queue.default_region,
            lambda: self.usecases.messages,
            self.survey_timeouts.wake,
        )
        if self.cluster is None:
            return local
        return SharedInboundSurveys(local, self.clinical_db)

    @functools.cached_property
    def contacts(self) -> Contacts:
        """Contacts, groups, saved audiences and CSV import (`gateway/contacts/`)."""
        return Contacts(
            store=self.store,
            clock=self.clock,
            audit=self.audit,
            region=self.config.queue.default_region,
            languages=self.usecases.consent.languages,
            book=self._shared_contacts(),
        )

    def _shared_contacts(self) -> ContactBook | None:
        """On a cluster, the contacts, groups and audiences every node shares."""
        if self.cluster is None:
            return None
        from gateway.cluster.contacts import ClusterContactBook  # here: psycopg is optional

        return ClusterContactBook(self.cluster.queue.pool, self.cluster.queue.cipher)

    @functools.cached_property
    def templates(self) -> Templates:
        """Message templates (`gateway/templates/`); `.renderer` renders notices."""
        consent = self.config.consent
        return Templates(
            renderer=TemplateRenderer(self.config.templates, consent.language, consent.brand),
            allow_drug_names=self.config.templates.allow_drug_names,
            store_=self.store,
            clock=self.clock,
            audit=self.audit,
            sample_link=self.links.book.sample_url() if self.config.links.enabled else None,
            db=self.clinical_db,
        )

    @functools.cached_property
    def links(self) -> Links:
        """Tracked links (`gateway/links/`): API `/links`, the panel page, the redirect
        listener; the accept path expands `{link:NAME}` from its book."""
        return Links(
            config=self.config.links,
            book=self.intake.links,
            store=self._link_store(),
            clock=self.clock,
            metrics=self.metrics,
        )

    def _link_store(self) -> LinkStore:
        """The links' tables: this node's, or on a cluster those every node shares."""
        if self.cluster is None:
            return LocalLinkStore(self.store, self.audit)
        from gateway.cluster.links import ClusterLinkStore  # here: psycopg is optional

        return ClusterLinkStore(self.cluster.queue.pool, self.audit, self.config.cluster.node_id)

    # -- analytics (issue 15, i15-analytics) ---------------------------------------------
    @functools.cached_property
    def analytics(self) -> Analytics:
        """Analytics without PHI (API `/analytics/...`, panel page); its rollup runs at
        start (on a cluster node, over the shared tables into sums kept in PostgreSQL)."""
        a = self.config.analytics
        zone = a.zone(self.config.appointments.time_zone)
        rollup = Rollup(self.store, self.clock, zone, interval=a.interval)
        figures = None
        if self.cluster is not None:  # sums of the shared tables, kept in PostgreSQL
            from gateway.cluster.analytics import ClusterFigures, ClusterRollup  # psycopg

            pool = self.cluster.queue.pool
            figures = ClusterFigures(pool, ClusterRollup(pool, self.clock, zone, a.interval))
        return Analytics(
            store=self.store, clock=self.clock, audit=self.audit, rollup=rollup, figures=figures
        )

    # -- retention and erasure (issue 14, i14-retention) --------------------------------
    @functools.cached_property
    def retention(self) -> Retention:
        """The retention job (hourly in housekeeping; `smsgw retention run`): on a
        cluster, in the shared PostgreSQL too."""
        config = self.config.retention
        return Retention(self.store, config, self.clock, self.audit, self._shared_sweep())

    def _shared_sweep(self) -> Sweep:
        if self.cluster is None:
            return NOTHING_SHARED_SWEEP
        from gateway.cluster.retention import ClusterSweep

        queue = self.cluster.queue
        return ClusterSweep(queue.pool, queue.cipher, self.config.retention)

    @functools.cached_property
    def erasures(self) -> Erasures:
        """Erasure of one person by number (API `/erasures`, `smsgw erase`): on a
        cluster, in the shared PostgreSQL too."""
        return Erasures(
            self.store, self.audit, self.clock, self.scheduler.forget, self._shared_store()
        )

    def _shared_store(self) -> SharedStore:
        """Where a person's data is kept beyond this node's store: on a cluster, the
        shared PostgreSQL."""
        if self.cluster is None:
            return NOTHING_SHARED
        from gateway.cluster.erasure import ClusterErasure

        queue, membership = self.cluster.queue, self.cluster.membership
        return ClusterErasure(queue.pool, queue.cipher, lambda: membership.me)
