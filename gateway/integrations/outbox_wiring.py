"""The outbox as the config asks for it: a consumer per webhook endpoint and one for its
callbacks, and one for Kannel dlr-urls when that listener is on (MQTT's joins at start).
A secret or TLS file that cannot be read stops the start in one line."""

from __future__ import annotations

from collections.abc import Callable

from drivers.clock import Clock
from drivers.credentials import SecretError
from gateway.config import Config
from gateway.integrations import kannel_dlr
from gateway.integrations.dlr_wishes import DlrWishes, LocalDlrWishes
from gateway.integrations.outbox import Outbox
from gateway.integrations.outbox_repo import OutboxRepo
from gateway.integrations.webhooks import (
    CallbackConsumer,
    Poster,
    WebhookConsumer,
    WebhookSecretError,
)
from gateway.startup import StartupFault
from gateway.store.store import Store


def build_outbox(
    config: Config,
    store: Store,
    clock: Clock,
    busy: Callable[[], bool] | None = None,
    repo: OutboxRepo | None = None,
    wishes: DlrWishes | None = None,
) -> Outbox:
    """The outbox with a consumer per webhook endpoint and one for its callbacks, and
    one for Kannel dlr-urls when that listener is on (MQTT's joins at start). `repo`:
    where the events are (a cluster's shared outbox; default the node's store); `wishes`
    where the Kannel dlr-urls are (a cluster's PostgreSQL; default the node's store)."""
    outbox = Outbox(store, config.outbox, clock, busy=busy, repo=repo)
    for i, hook in enumerate(config.webhooks):
        try:
            poster = Poster(hook, config)
        except (SecretError, WebhookSecretError) as e:
            raise StartupFault(f"webhooks[{i}] ({hook.name}): secret: {e}", exit_code=2) from None
        except OSError as e:  # a CA or client certificate file
            raise StartupFault(
                f"webhooks[{i}] ({hook.name}): TLS files: {e.strerror or e}", exit_code=2
            ) from None
        outbox.register(WebhookConsumer(poster))
        outbox.register(CallbackConsumer(poster, outbox.repo.callback_urls))
    if (
        dlr := kannel_dlr.build_consumer(wishes or LocalDlrWishes(store), config.kannel)
    ) is not None:
        outbox.register(dlr)
    return outbox
