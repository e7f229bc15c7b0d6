"""Front ends and consumers that connect smsgw to hospital systems: the event outbox and
what delivers from it (webhooks, MQTT), and the Kannel-compatible `sendsms` listener."""
