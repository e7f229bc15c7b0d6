"""`smsgw keys protect` and `smsgw keys unprotect`: wrap the master key file by a
passphrase, or unwrap it again (gateway/custody.py has the format).

Both work on the key file only, never on the store: the running service keeps the key
it read at start, and the next start asks for the passphrase. The file is replaced
atomically (written next to it, flushed, renamed over it) and keeps its owner and mode.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import custody
from gateway.config import Config
from gateway.ops import client
from gateway.ops.registry import OpContext, op
from gateway.store import crypto


def _passphrase(args: argparse.Namespace, *, twice: bool) -> str | None:
    if args.passphrase_file:
        text = Path(args.passphrase_file).read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""
    if not sys.stdin.isatty():
        print(
            f"smsgw keys {args.action}: no console to read a passphrase from;"
            " use --passphrase-file",
            file=sys.stderr,
        )
        return None
    first = getpass.getpass("passphrase: ")
    if twice and first != getpass.getpass("passphrase again: "):
        print(f"smsgw keys {args.action}: the two passphrases differ", file=sys.stderr)
        return None
    return first


def protect(args: argparse.Namespace, config: Config) -> int:
    path = config.master_key_path
    text = custody.read_key_text(config)
    if custody.is_protected(text):
        print(f"smsgw keys protect: {path} is protected already", file=sys.stderr)
        return 1
    key = crypto.read_master_key(path)
    passphrase = _passphrase(args, twice=True)
    if passphrase is None:
        return 1
    sealed = custody.protect(key, passphrase)
    if custody.unprotect(sealed, passphrase, path) != key:  # never replace a key blindly
        raise custody.CustodyError("the protected key did not open again; nothing changed")
    _replace(path, sealed)
    print(
        f"master key {path} is now protected by a passphrase; the service asks for it at"
        " its next start (docs/ops/key-custody.md). Keep the passphrase apart from the"
        " key's backup."
    )
    return _record(config, "protected", key)


def unprotect(args: argparse.Namespace, config: Config) -> int:
    path = config.master_key_path
    text = custody.read_key_text(config)
    if not custody.is_protected(text):
        print(f"smsgw keys unprotect: {path} is not protected", file=sys.stderr)
        return 1
    passphrase = _passphrase(args, twice=False)
    if passphrase is None:
        return 1
    key = custody.unprotect(text, passphrase, path)
    _replace(path, base64.b64encode(key).decode() + "\n")
    print(f"master key {path} is a plain key file again (mode 0600)")
    return _record(config, "unprotected", key)


@op("keys.custody_changed")
async def custody_changed(ctx: OpContext, args: dict[str, Any]) -> int:
    """Audit a change of the key file's custody (`master_key_protected`/`_unprotected`)."""
    change = args.get("change")
    if change not in ("protected", "unprotected"):
        ctx.err("smsgw keys: change must be protected or unprotected")
        return 2
    await ctx.audit.record(ctx.actor, f"master_key_{change}", "key", "master")
    return 0


def _record(config: Config, change: str, key: bytes) -> int:
    """Audit the change: in the running service, else here with the key in hand."""
    if not config.db_path.exists():
        return 0  # no store yet: nothing to record in
    return client.run(config, "keys.custody_changed", {"change": change}, key=key)


def _replace(path: Path, text: str) -> None:
    """Write `text` in place of `path`, atomically, keeping its owner."""
    st = path.stat()
    tmp = path.with_name(f".{path.name}.new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def add_parsers(keys_sub: Any, load: Callable[[str | None], Config]) -> None:
    """`protect` and `unprotect` under the `smsgw keys` parser."""
    for action, text, run in (
        ("protect", "wrap the master key file by a passphrase (asked at each start)", protect),
        ("unprotect", "unwrap a passphrase-protected master key file", unprotect),
    ):
        sp = keys_sub.add_parser(action, help=text)
        sp.add_argument("--passphrase-file", help="read the passphrase from this file's first line")
        sp.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else embedded)")

        def command(args: argparse.Namespace, run: Any = run) -> int:
            return int(run(args, load(args.config)))

        sp.set_defaults(func=command)
