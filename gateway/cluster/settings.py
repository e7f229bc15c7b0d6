"""The `[cluster]` config block: several `smsgw run` nodes sharing one PostgreSQL queue.

With `enabled = true` the message queue (accept, claims, outcomes, receipts, recovery)
lives in PostgreSQL (`gateway/cluster/queue_store.py`); everything else stays in each
node's own SQLite store. The password never sits in the TOML: it is read from a file
(`password_file`) or a systemd credential (`password_credential`, from
`$CREDENTIALS_DIRECTORY`). Features whose data is not on the cluster backend yet are
refused at start (`refused_features`), so no setting is silently ignored.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

if TYPE_CHECKING:
    from gateway.config import Config

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

Seconds = Annotated[float, msgspec.Meta(gt=0)]


# The critical reserve's default, in seconds of the account's rate: as long as a critical
# message takes the next token ahead of the other classes on one node
# (`gateway.scheduler.CRITICAL_AHEAD_S`; not imported: the scheduler imports the config).
CRITICAL_RESERVE_S = 0.05


class RateAccount(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A carrier account's contract (`[[cluster.accounts]]`): at most `rate` submits a
    second across every node, `burst` at once; routes name it with `account`.
    `critical_reserve`: the bottom tokens of its bucket only critical messages may take
    (`gateway/cluster/bucket_reserve.py`); unset, `reserve()`'s default."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    rate: Annotated[float, msgspec.Meta(gt=0)]
    burst: Annotated[float, msgspec.Meta(ge=1)] = 1.0
    critical_reserve: Annotated[float, msgspec.Meta(ge=0)] | None = None

    def reserve(self) -> float:
        """The critical reserve in tokens: as configured, else `CRITICAL_RESERVE_S` of
        the rate (at least one token) but at most a quarter of the burst, so none below
        a burst of 4. It comes out of what bulk claims may save up: with a burst of 2,
        one token kept back would leave bulk a bucket of one, and every claim later
        than a token's interval would lose one (S4's survivor at 48/s fell under 95 %)."""
        if self.critical_reserve is not None:
            return self.critical_reserve
        ahead = max(1.0, math.ceil(self.rate * CRITICAL_RESERVE_S))
        return float(min(ahead, math.floor(self.burst / 4)))


class ClusterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    node_id: str = ""  # stable per node; each start registers a new incarnation of it
    conninfo: str = ""  # libpq key=value or postgresql:// URI, without the password
    password_file: str | None = None
    password_credential: str | None = None  # a systemd credential's name
    lease_seconds: Seconds = 10.0
    margin_seconds: Seconds = 3.0
    heartbeat_seconds: Seconds = 2.0
    pool_size: Annotated[int, msgspec.Meta(ge=2, le=100)] = 8
    # How long an API or panel request waits for a database connection before it answers
    # 503 store_unavailable (background work keeps the pool's 30 s): below the clients'
    # own timeouts, above a busy pool's usual wait (`cluster/db_breaker.py`).
    request_timeout: Seconds = 5.0
    # Once the database answers again, the node has a connection within this many
    # seconds, however long it was away: the pool's reconnection delay never grows past
    # it (`cluster/reconnect.py`). Not so small that a node's attempts hammer a database
    # that is starting up; best below `lease_seconds - margin_seconds`, so that a short
    # outage does not fence the node (not required: a deployment with a shorter lease
    # keeps the default, and its node unfences at the renewal that follows).
    reconnect_max_delay: Annotated[float, msgspec.Meta(ge=0.25, le=60)] = 3.0
    # How often a node anchors every node's audit chain head (only when one moved).
    audit_anchor_seconds: Seconds = 60.0
    # How long a node keeps trying to record what the carrier answered while PostgreSQL
    # is away; past that the outcomes go to its local journal (`outcome_journal.py`).
    outcome_retry_seconds: Seconds = 60.0
    # Incarnations recovered this long ago (and referenced by no live row) are pruned.
    prune_nodes_after_seconds: Seconds = 86400.0
    accounts: tuple[RateAccount, ...] = ()  # shared rates (route_settings.py)

    def problems(self) -> str | None:
        if not self.enabled:
            return None
        if not _NODE_ID.fullmatch(self.node_id):
            return (
                "cluster.node_id: needed with cluster.enabled, 1-63 letters, digits,"
                " '.', '_' or '-' (a stable name per node, e.g. the host name)"
            )
        if not self.conninfo:
            return "cluster.conninfo: needed with cluster.enabled (e.g. 'host=db1 dbname=smsgw')"
        try:  # here: psycopg is the optional [postgresql] extra
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            return "cluster.enabled: needs psycopg (pip install 'smsgw[postgresql]')"
        try:
            parts = conninfo_to_dict(self.conninfo)
        except Exception:
            return "cluster.conninfo: not a libpq connection string or postgresql:// URI"
        if "password" in parts:
            return (
                "cluster.conninfo: holds a password; put it in cluster.password_file or a"
                " systemd credential named by cluster.password_credential"
            )
        if self.password_file is not None and self.password_credential is not None:
            return "cluster.password_file: set it or cluster.password_credential, not both"
        if self.margin_seconds >= self.lease_seconds:
            return "cluster.margin_seconds: must be less than cluster.lease_seconds"
        if self.heartbeat_seconds >= self.lease_seconds - self.margin_seconds:
            return (
                "cluster.heartbeat_seconds: must be less than cluster.lease_seconds minus"
                " cluster.margin_seconds (a renewal must land before the node fences itself)"
            )
        return None

    def password(self, data_dir: Path) -> str | None:
        """The database password from its file or credential (None: none configured,
        e.g. peer or certificate authentication). Raises `ValueError` naming the key."""
        if self.password_credential is not None:
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if directory is None:
                raise ValueError(
                    "cluster.password_credential: $CREDENTIALS_DIRECTORY is not set"
                    " (LoadCredential= in the systemd unit)"
                )
            path = Path(directory) / self.password_credential
            key = "cluster.password_credential"
        elif self.password_file is not None:
            path = Path(self.password_file).expanduser()
            path = path if path.is_absolute() else data_dir / path
            key = "cluster.password_file"
        else:
            return None
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ValueError(f"{key}: cannot read it ({e.strerror})") from None


def _configured(value: Any, default: Any) -> bool:
    return bool(value != default)


def refused_features(config: Config) -> list[str]:
    """The settings that ask for something the cluster backend does not keep yet."""
    # Here: gateway.config imports this module, and these the config's types.

    # Tracked links (cluster/links.py) and directory sign-in (its users and sessions
    # through the shared PanelStore, cluster/panel.py) are on the cluster backend.
    # Webhooks, MQTT and Kannel's dlr-urls take their events from the shared outbox
    # (cluster/outbox_store.py; MQTT's per-node names: integrations/mqtt_names.py).
    # Appointments (the JSON API), reminder rules, templates and the notice runner
    # keep their rows in the shared PostgreSQL (cluster/clinical_db.py).
    # Contacts, groups, audiences and campaigns are shared (cluster/contacts.py,
    # cluster/campaigns.py, cluster/campaign_feed.py). HL7 inbound feeds keep their
    # message log in the shared PostgreSQL (cluster migration 21), and the write-back
    # (outbound interfaces) its queue (23), sent by one node per interface. Results events
    # and medication schedules are in the shared clinical tables, and the appointment
    # replies with their worklist (cluster migration 22, cluster/replies.py).
    checks: list[tuple[str, Any, Any]] = [
        ("demo.peers", config.demo.peers, False),
    ]
    return [name for name, value, default in checks if _configured(value, default)]


def cluster_problem(config: Config) -> str | None:
    """The first problem of `[cluster]`, or a refusal of what it cannot carry yet."""
    if problem := config.cluster.problems():
        return problem
    if not config.cluster.enabled:
        return None
    if config.source is None:
        return "cluster.enabled: needs a config file (the embedded default is one node)"
    refused = refused_features(config)
    if refused:
        return (
            "cluster.enabled: not on the cluster backend yet, remove or turn off: "
            + ", ".join(refused)
            + " (docs/ops/cluster.md)"
        )
    return None
