"""An independent SMPP client (smpplib) for interop tests; its calls block, so tests run
them through `asyncio.to_thread`."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm

SENDER = "12025550100"  # 555-01xx: fictional numbers
RECIPIENT = "12025550147"

# The receipt text SMSCs send (SMPP 3.4 Appendix B), with an empty text field.
RECEIPT = re.compile(
    r"id:(?P<id>\w+) sub:001 dlvrd:001 submit date:\d{10} done date:\d{10} "
    r"stat:DELIVRD err:000 text:(?P<text>.*)"
)

_BOUND = (
    smpplib.consts.SMPP_CLIENT_STATE_BOUND_TX,
    smpplib.consts.SMPP_CLIENT_STATE_BOUND_RX,
    smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX,
)


class SmpplibEsme:
    """An smpplib client connected to 127.0.0.1:`port`.

    `delivered` collects deliver_sm PDUs (answered with the statuses queued in `answers`,
    then ESME_ROK); `message_ids` the ids of submit_sm_resp, in order.
    """

    def __init__(
        self,
        port: int,
        *,
        system_id: str,
        password: str,
        socket_timeout: float = 5.0,
        wait: float = 10.0,
    ) -> None:
        self.system_id = system_id
        self.password = password
        self.wait = wait
        self.client = smpplib.client.Client(
            "127.0.0.1", port, timeout=socket_timeout, allow_unknown_opt_params=True
        )
        self.delivered: list[Any] = []
        self.message_ids: list[str] = []
        self.answers: list[int] = []
        self.client.set_message_received_handler(self._received)
        self.client.set_message_sent_handler(
            lambda pdu: self.message_ids.append(pdu.message_id.decode())
        )
        self.client.connect()

    def _received(self, pdu: Any) -> int:
        self.delivered.append(pdu)
        return self.answers.pop(0) if self.answers else 0  # ESME_ROK

    def bind(self, mode: str = "transceiver", password: str | None = None, **fields: Any) -> None:
        system_id = fields.pop("system_id", self.system_id)
        getattr(self.client, f"bind_{mode}")(
            system_id=system_id, password=self.password if password is None else password, **fields
        )

    def submit(self, text: str, **fields: Any) -> None:
        parts, data_coding, esm_class = smpplib.gsm.make_parts(text)
        for part in parts:
            self.client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_INTL,
                source_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                source_addr=SENDER,
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                destination_addr=RECIPIENT,
                short_message=part,
                data_coding=data_coding,
                esm_class=esm_class,
                **fields,
            )

    def read_until(self, done: Callable[[], bool], limit: float | None = None) -> None:
        """Handle incoming PDUs until `done()`; each read waits at most the socket timeout."""
        limit = self.wait if limit is None else limit
        deadline = time.monotonic() + limit
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"smpplib client: condition not met within {limit}s")
            with contextlib.suppress(TimeoutError):  # nothing came within the timeout
                self.client.read_once(auto_send_enquire_link=False)

    def close(self) -> None:
        with contextlib.suppress(smpplib.exceptions.ConnectionError, OSError):
            if self.client.state in _BOUND:
                self.client.unbind()
        self.client.disconnect()
