"""HL7 v2 over MLLP: the wire (framing, charset, header check, ACKs), the inbound
store with its dedupe and quarantine, the listener, and the outbound client lane.
Mapping a message to commands is `gateway.clinical`'s business."""
