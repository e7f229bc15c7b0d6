"""Operator commands that must work on a real install: `keys`, `backup`, `restore`,
`erase`, `retention`, and the console's `user`, `token`, `audit`.

Each is an *op*: an async function over an `OpContext` (open store, audit trail, the
master key, a progress line). The console runs an op either inside the running daemon,
through its local admin socket (`gateway.ops.socket`; the only way on a TPM-sealed
install, where the master key exists only in the service's credentials), or, when no
daemon runs, in the console process against the data directory (`run_local`). Both
paths call the same function, so an op behaves the same either way.
"""
