"""Backup and restore of the store (`smsgw backup`, `smsgw backup --verify`, `smsgw restore`).

A backup is a pair of files: `<name>.db`, a consistent copy of the store taken with
SQLite's online backup API (still field-encrypted: the same bytes a stolen disk would
give, no plaintext and no key), and `<name>.db.manifest.json` beside it, which says what
the copy is (schema version, page count, SHA-256, key generations) and which master key
opens it, as a fingerprint (an HMAC of a constant), never the key itself. The master key
is kept apart by the operator (docs/ops/backup.md).
"""
