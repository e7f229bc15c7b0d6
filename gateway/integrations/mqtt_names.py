"""The names a gateway uses on its MQTT broker: client id, status topic, send-topic filter.

On one node they are the configured ones. On a cluster every node connects to the same
broker with the same `[mqtt]`, so each name that must stay apart is made the node's:

- the client id is `<client_id>-<node_id>`: a broker ends the older of two connections
  with one client id, and a persistent session belongs to one id;
- the status topic is `<prefix>/status/<node_id>`: each node's last will says that
  node is offline, never the others (`<prefix>/status/#` follows every node);
- the send topic is subscribed as the MQTT 5 shared subscription
  `$share/<client_id>/<topic>`: the broker hands each send to one node of the group,
  so a send is accepted once, not once per node. A node follows the others' status
  topics (`peers_filter`) to know, at a clean stop, whether it may leave the share.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Config, MqttConfig


def topic_level(value: str) -> str:
    """One topic level from an id, a route or a share name: MQTT's separators and
    wildcards escaped."""
    return "".join(f"%{ord(c):02X}" if c in "/+#%\0" else c for c in value) or "%00"


@dataclass(frozen=True, slots=True)
class MqttNames:
    client_id: str
    status_topic: str
    send_filter: str  # what is subscribed to receive the send topic
    peers_filter: str | None = None  # the other nodes' status topics (on a cluster)
    client_prefix: str | None = None  # a node's client id after its status topic's prefix

    def client_id_of(self, status_topic: str) -> str:
        """The client id of the node whose status topic this is (on a cluster)."""
        if self.client_prefix is None:
            raise ValueError("one gateway has no peers")
        return self.client_prefix + status_topic.rsplit("/", 1)[-1]

    @classmethod
    def of(cls, config: MqttConfig, node_id: str | None = None) -> MqttNames:
        """The names of a single gateway (`node_id` None) or of one cluster node."""
        if node_id is None:
            return cls(config.client_id, f"{config.topic_prefix}/status", config.send_topic_path)
        return cls(
            f"{config.client_id}-{node_id}",
            f"{config.topic_prefix}/status/{node_id}",
            f"$share/{topic_level(config.client_id)}/{config.send_topic_path}",
            f"{config.topic_prefix}/status/+",
            f"{config.client_id}-",
        )


def names_for(config: Config) -> MqttNames:
    """This gateway's names: per node when `[cluster]` is on."""
    node = config.cluster.node_id if config.cluster.enabled else None
    return MqttNames.of(config.mqtt, node)
