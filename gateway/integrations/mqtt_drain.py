"""A dead node's turn of the send topic, taken by a live node (on a cluster).

mosquitto serves a shared subscription per session: a member whose connection is gone
(killed, powered off, cut off) is handed its turn of the sends all the same, queued in
its session until it returns. With two nodes and one dead, every second send waits.
So when a peer's status topic says `offline` (its clean stop, or the broker publishing
its last will) and it is still not back `share_drain_after` seconds later, one live
node, the one whose own status topic sorts first among the nodes online, connects
under the dead node's client id to its session (`clean_start` false), leaves the share
at once so no new send is routed there, handles every send the session had queued
through the same handler as its own, and disconnects with a session expiry of 0: the
broker drops the session and the dead node's place in the share with it. The sends
posted from then on go to the live nodes.

A node that was only cut off for a moment comes back within the grace and nothing is
taken. One that comes back while its session is being drained takes its client id
back (the broker ends the drain's connection); it joins the share again on its own
connect, as after any start. A drained session that was empty (the node had left the
share at a clean stop) costs one connection. A send acknowledged by the drain and lost
in a crash of the draining node is lost as any send acknowledged by a node that then
crashes (docs/ops/cluster.md); the client's `idempotency-key` makes its retry safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiomqtt
import structlog

from drivers.clock import Clock
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.mqtt")

IDLE = 1.0  # seconds without a queued send after which a drained session is done
LIMIT = 600.0  # a drain never runs longer (a broker that keeps sending is not queued work)

ClientFor = Callable[[str], aiomqtt.Client]  # a client under a given client id, no will
Handler = Callable[[aiomqtt.Message], Awaitable[None]]


class ShareDrain:
    """Drains dead peers' sessions for one `MqttLink` (`peer_offline`, `peer_online`)."""

    def __init__(
        self,
        *,
        clock: Clock,
        after: float,
        own_status: str,
        client_for: ClientFor,
        client_id_of: Callable[[str], str],
        share_filter: str,
        send_topic: str,
        handler: Callable[[], Handler | None],
    ) -> None:
        self._clock = clock
        self._after = after
        self._own_status = own_status
        self._client_for = client_for
        self._client_id_of = client_id_of
        self._share_filter = share_filter
        self._send_topic = send_topic
        self._handler = handler
        self._waiting: dict[str, asyncio.Task[None]] = {}  # peer status topic -> its drain
        self.drained = 0  # sends handled from dead peers' sessions

    def peer_offline(self, topic: str, online: Callable[[], set[str]]) -> None:
        """A peer said offline: drain its session if it stays away (`online()`: the
        peers' status topics saying online, read again when the grace is over)."""
        if topic not in self._waiting:
            self._waiting[topic] = asyncio.create_task(self._after_grace(topic, online))

    def peer_online(self, topic: str) -> None:
        task = self._waiting.pop(topic, None)
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._waiting.values())
        self._waiting.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _after_grace(self, topic: str, online: Callable[[], set[str]]) -> None:
        try:
            await self._clock.sleep(self._after)
            now_online = online()
            if topic in now_online or min(now_online | {self._own_status}) != self._own_status:
                return  # back, or another live node drains it
            await self._drain(topic)
        finally:
            if self._waiting.get(topic) is asyncio.current_task():
                del self._waiting[topic]

    async def _drain(self, topic: str) -> None:
        handler = self._handler()
        if handler is None:
            return
        node = topic.rsplit("/", 1)[-1]
        taken = 0
        try:
            client = self._client_for(self._client_id_of(topic))
            async with asyncio.timeout(LIMIT), client:
                await client.unsubscribe(self._share_filter)
                while True:
                    try:
                        async with asyncio.timeout(IDLE):
                            message = await anext(aiter(client.messages))
                    except TimeoutError:
                        break
                    if message.topic.matches(self._send_topic):
                        taken += 1
                        await handler(message)
        except aiomqtt.MqttError as e:  # the node came back and took its session
            log.info("mqtt_share_drain_ended", node=node, sends=taken, reason=type(e).__name__)
        except Exception as e:
            log.error("mqtt_share_drain_failed", node=node, error=exception_summary(e))
        else:
            log.info("mqtt_share_drained", node=node, sends=taken)
        self.drained += taken
