"""The console side of the admin panel: `smsgw user ...` and `smsgw audit verify`
(moved out of `gateway/admin/`, which imports nothing from the store).

The console is where the first admin is made (there is no default account). Every
change is audited with the actor `console`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.clock import SystemClock
from gateway.admin import passwords
from gateway.admin.accounts import Accounts, InvalidUsername
from gateway.config import Config
from gateway.panel_users import Role, UserExists
from gateway.store import crypto
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.panel_sql import AdminRepo
from gateway.store.store import Store
from gateway.usecases.audit_log import AuditLog

CONSOLE = "console"


async def with_store(config: Config) -> Store:
    store = Store(
        config.db_path,
        crypto.read_master_key(config.master_key_path),
        synchronous=config.store.synchronous,
    )
    await store.open()
    return store


def audit_trail(store: Store, config: Config) -> AuditTrail:
    key = crypto.read_master_key(config.master_key_path)
    return AuditTrail(store, audit_key(key), SystemClock())


def _read_password(args: argparse.Namespace) -> str | None:
    """From `--password-file` (its first line), or typed twice on the console."""
    if args.password_file:
        text = Path(args.password_file).read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""
    if not sys.stdin.isatty():
        print(
            "smsgw user: no console to read a password from; use --password-file", file=sys.stderr
        )
        return None
    first = getpass.getpass("password: ")
    if first != getpass.getpass("password again: "):
        print("smsgw user: the two passwords differ", file=sys.stderr)
        return None
    return first


def user(args: argparse.Namespace, config: Config) -> int:
    """`smsgw user add|list|disable|enable|reset-totp|unlock`."""
    password = _read_password(args) if args.action == "add" else None
    if args.action == "add" and password is None:
        return 1

    async def run() -> int:
        store = await with_store(config)
        try:
            repo = AdminRepo(store)
            accounts = Accounts(repo, audit_trail(store, config), SystemClock(), config.admin)
            if args.action == "add":
                assert password is not None
                try:
                    user = await accounts.create_user(
                        args.username, Role(args.role), password, CONSOLE
                    )
                except (InvalidUsername, passwords.WeakPassword) as e:
                    print(f"smsgw user add: {e}", file=sys.stderr)
                    return 1
                except UserExists:
                    print(f"smsgw user add: {args.username} exists", file=sys.stderr)
                    return 1
                print(f"added {user.username} ({user.role.value}), id {user.id}")
                return 0
            if args.action == "list":
                for u in await repo.users():
                    state = "disabled" if u.disabled else "active"
                    factor = "totp" if u.totp_enabled else "-"
                    print(f"{u.id}  {state:8} {u.role.value:8} {factor:4} {u.username}")
                return 0
            found = await repo.user_by_name(args.username)
            if found is None:
                print(f"smsgw user: no user {args.username}", file=sys.stderr)
                return 1
            user = found[0]
            if args.action == "disable":
                await repo.set_disabled(user.id, SystemClock().time())
                await accounts.audit.record(CONSOLE, "user_disabled", "user", user.id)
            elif args.action == "enable":
                await repo.set_disabled(user.id, None)
                await accounts.audit.record(CONSOLE, "user_enabled", "user", user.id)
            elif args.action == "reset-totp":
                await repo.reset_totp(user.id)
                await accounts.audit.record(CONSOLE, "totp_reset", "user", user.id)
            elif args.action == "unlock":
                await accounts.unlock(user.username, CONSOLE)
            print(f"{args.action}: {user.username} done")
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def audit_verify(config: Config) -> int:
    """`smsgw audit verify`: exit 0 if the chain is intact, 1 with the first bad entry."""

    async def run() -> int:
        store = await with_store(config)
        try:
            result = await AuditLog(trail=audit_trail(store, config)).verify(CONSOLE)
        finally:
            await store.close()
        if result.ok:
            print(
                f"audit chain intact: {result.entries} entries, head {result.head_seq}"
                f" {result.head_hash}"
            )
            return 0
        print(f"audit chain BROKEN at entry {result.first_bad_seq}: {result.reason}")
        return 1

    return asyncio.run(run())


def add_parsers(
    sub: Any,
    cmd_user: Callable[[argparse.Namespace], int],
    cmd_audit: Callable[[argparse.Namespace], int],
) -> None:
    user_parser = sub.add_parser("user", help="manage admin panel users")
    user_sub = user_parser.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser("add", help="add a user (the password is asked twice)")
    add.add_argument("username", help="the sign-in name")
    add.add_argument(
        "--role", required=True, choices=[r.value for r in Role], help="what the user may do"
    )
    add.add_argument("--password-file", help="read the password from this file's first line")
    user_sub.add_parser("list", help="list users")
    for action, text in (
        ("disable", "disable a user and end their sessions"),
        ("enable", "enable a disabled user"),
        ("reset-totp", "remove a user's second factor (they enrol again at next sign-in)"),
        ("unlock", "lift a lock after too many failed sign-ins"),
    ):
        user_sub.add_parser(action, help=text).add_argument("username", help="the sign-in name")
    for sp in user_sub.choices.values():
        sp.add_argument("--config", help="TOML file (default: embedded)")
    user_parser.set_defaults(func=cmd_user)

    audit_parser = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit_parser.add_subparsers(dest="action", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; exit 1 if broken")
    verify.add_argument("--config", help="TOML file (default: embedded)")
    audit_parser.set_defaults(func=cmd_audit)
