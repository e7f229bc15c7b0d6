"""Key rotation, re-encryption and master key replacement (`smsgw keys`, docs/ops/keys.md)."""
