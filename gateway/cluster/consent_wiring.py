"""Consent on a cluster, wired into a node's gateway: one list for every node.

The claim check, the keyword answers and the ledger behind `/optouts` and `/consents`
all take the queue's cipher, the shared keyring's, which takes up a rotation made on any
node (the node's own store cipher would not)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cluster.consent_claim import ClusterClaimCheck
from gateway.cluster.consent_inbound import ClusterInboundConsent
from gateway.cluster.consent_reviews import ClusterReviews
from gateway.cluster.consent_store import ClusterLedger, SharedWithdrawal
from gateway.config import Config
from gateway.consent.policy import Policy
from gateway.router import Router
from gateway.scheduler import Scheduler
from gateway.store.store import Store

if TYPE_CHECKING:
    from gateway.cluster.node import ClusterNode


def shared_withdrawal(node: ClusterNode, config: Config) -> SharedWithdrawal:
    """What an opt-out recorded on the shared ledger blocks at once."""
    membership = node.membership
    return SharedWithdrawal(config.consent, lambda: membership.me)


def wire_consent(
    node: ClusterNode,
    config: Config,
    store: Store,
    router: Router,
    scheduler: Scheduler,
    policy: Policy,
) -> ClusterInboundConsent:
    """Check the send policy in each of the node's claims; the keyword answers (STOP,
    START) for its inbound messages, decided on the shared ledger."""
    node.queue.claim_check = ClusterClaimCheck(policy, node.queue.cipher)
    return ClusterInboundConsent(
        config,
        store,
        router,
        scheduler,
        node.queue,
        config.cluster.node_id,
        shared_withdrawal(node, config),
    )


def shared_ledger(node: ClusterNode, config: Config) -> ClusterLedger:
    """The consent ledger every node shares, with its review queue, for the consent
    use cases."""
    queue, node_id = node.queue, config.cluster.node_id
    return ClusterLedger(
        queue.pool,
        queue.cipher,
        node_id,
        shared_withdrawal(node, config),
        reviews=ClusterReviews(queue.pool, queue.cipher, node_id),
    )
