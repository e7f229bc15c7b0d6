"""`callback_url` on a send: allowed only at the origin of a configured webhook endpoint.

The gateway never POSTs to an arbitrary URL. A message's status events go to its
`callback_url` only when that URL's scheme, host and port are those of a `[[webhooks]]`
endpoint (whose secret signs them, and whose address checks apply); anything else is
refused when the message is accepted, with an error that does not quote the URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from gateway.config import WebhookConfig
from gateway.errors import ApiError
from gateway.integrations.addresses import origin


def check_callback(url: str | None, webhooks: Sequence[WebhookConfig], field: str) -> None:
    """Raise `ApiError` 422 `callback_not_allowed` unless `url` is None or at the
    origin of a configured endpoint."""
    if url is None:
        return
    target = origin(url)
    allowed = {origin(hook.url) for hook in webhooks}
    if target is None or target not in allowed or urlsplit(url).username is not None:
        raise ApiError(
            422,
            "callback_not_allowed",
            f"{field}: a callback URL must have the scheme, host and port of a configured"
            " webhook endpoint ([[webhooks]] in the configuration)",
            field=field,
        )
