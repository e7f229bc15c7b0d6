"""`smsgw user ...`, `smsgw token ...`, `smsgw audit verify`: ops and their console.

Each command is an op (gateway/ops/registry.py): the handlers below run inside the
running service when its admin socket answers (the only way on a TPM-sealed install),
else in the console process (`gateway.ops.client.run` chooses). Passwords are read
here, on the console, and passed in the op's arguments; they are never logged or
audited. The console is where the first admin is made (there is no default account).
Every change is audited with the actor `console` (offline) or `console:<user>` (the
admin socket's peer).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.clock import SystemClock
from gateway import custody, store_migrate_cmd
from gateway.admin import passwords
from gateway.admin.accounts import Accounts, InvalidUsername
from gateway.config import Config
from gateway.consent import token_purposes
from gateway.ops import client
from gateway.ops.registry import OpContext, op
from gateway.panel_store import PanelStore
from gateway.panel_users import Role, UserExists
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.panel_sql import AdminRepo
from gateway.store.store import Store
from gateway.tokens import SCOPES, BadScope, parse_scopes
from gateway.usecases.audit_log import AuditLog
from gateway.usecases.tokens import Tokens

CONSOLE = "console"
USER_HEADER = f"{'ID':12}  {'STATE':8} {'ROLE':8} {'2FA':4} NAME"
TOKEN_HEADER = f"{'ID':12}  {'STATE':8} {'SCOPES':18} NAME"


async def with_store(config: Config) -> Store:
    key = custody.load_master_key(config)  # a protected key is unlocked once
    store = Store(config.db_path, key, synchronous=config.store.synchronous)
    await store.open()
    return store


def audit_trail(store: Store, config: Config) -> AuditTrail:
    return AuditTrail(store, audit_key(store.master_key), SystemClock())


# -- the ops ---------------------------------------------------------------------------


def _panel(ctx: OpContext) -> PanelStore:
    """Inside the daemon its panel store (on a cluster the shared one), else the
    node's own tables (copied up at its first start on a cluster)."""
    return AdminRepo(ctx.store) if ctx.gateway is None else ctx.gateway.admin_repo


def _accounts(ctx: OpContext) -> Accounts:
    return Accounts(_panel(ctx), ctx.audit, ctx.clock, ctx.config.admin)


@op("user.add")
async def user_add(ctx: OpContext, args: dict[str, Any]) -> int:
    username, password = str(args.get("username", "")), args.get("password")
    try:
        role = Role(str(args.get("role")))
    except ValueError:
        ctx.err(f"smsgw user add: role must be one of {', '.join(r.value for r in Role)}")
        return 2
    if not isinstance(password, str):
        ctx.err("smsgw user add: no password given")
        return 2
    try:
        user = await _accounts(ctx).create_user(username, role, password, ctx.actor)
    except (InvalidUsername, passwords.WeakPassword) as e:
        ctx.err(f"smsgw user add: {e}")
        return 1
    except UserExists:
        ctx.err(f"smsgw user add: {username} exists")
        return 1
    ctx.out(f"added {user.username} ({user.role.value}), id {user.id}")
    return 0


@op("user.list")
async def user_list(ctx: OpContext, args: dict[str, Any]) -> int:
    ctx.out(USER_HEADER)
    for u in await _panel(ctx).users():
        state = "disabled" if u.disabled else "active"
        factor = "totp" if u.totp_enabled else "-"
        ctx.out(f"{u.id:12}  {state:8} {u.role.value:8} {factor:4} {u.username}")
    return 0


async def _change_user(ctx: OpContext, args: dict[str, Any], action: str) -> int:
    accounts = _accounts(ctx)
    repo = accounts.repo
    username = str(args.get("username", ""))
    found = await repo.user_by_name(username)
    if found is None:
        ctx.err(f"smsgw user: no user {username}")
        return 1
    user = found[0]
    if action == "disable":
        await repo.set_disabled(user.id, ctx.clock.time())
        await ctx.audit.record(ctx.actor, "user_disabled", "user", user.id)
    elif action == "enable":
        await repo.set_disabled(user.id, None)
        await ctx.audit.record(ctx.actor, "user_enabled", "user", user.id)
    elif action == "reset-totp":
        await repo.reset_totp(user.id)
        await ctx.audit.record(ctx.actor, "totp_reset", "user", user.id)
    else:
        await accounts.unlock(user.username, ctx.actor)
    ctx.out(f"{action}: {user.username} done")
    return 0


USER_CHANGES = {
    "disable": "disable a user and end their sessions",
    "enable": "enable a disabled user",
    "reset-totp": "remove a user's second factor (they enrol again at next sign-in)",
    "unlock": "lift a lock after too many failed sign-ins",
}


def _register_change(action: str) -> None:
    async def handler(ctx: OpContext, args: dict[str, Any]) -> int:
        return await _change_user(ctx, args, action)

    op(f"user.{action}")(handler)


for _action in USER_CHANGES:
    _register_change(_action)


def _tokens(ctx: OpContext) -> Tokens:
    if ctx.gateway is not None:  # the running service's: a revocation reaches its cache
        return ctx.gateway.usecases.tokens
    return Tokens(store=ctx.store, audit=ctx.audit, clock=ctx.clock)


@op("token.create")
async def token_create(ctx: OpContext, args: dict[str, Any]) -> int:
    purpose = args.get("purpose") or None
    try:
        scopes = parse_scopes(str(args.get("scope", "send,read")))
        if purpose is not None:
            token_purposes.check(str(purpose))
    except (BadScope, token_purposes.BadPurpose) as e:
        ctx.err(f"smsgw: {e}")
        return 2
    token = await _tokens(ctx).create(ctx.actor, str(args.get("name", "api")), scopes, purpose)
    ctx.out(token.text)
    return 0


@op("token.list")
async def token_list(ctx: OpContext, args: dict[str, Any]) -> int:
    ctx.out(TOKEN_HEADER)
    for t in await _tokens(ctx).list():
        state = "revoked" if t.revoked_at else "active"
        ctx.out(f"{t.id:12}  {state:8} {','.join(sorted(t.scopes)):18} {t.name}")
    return 0


@op("token.revoke")
async def token_revoke(ctx: OpContext, args: dict[str, Any]) -> int:
    token_id = str(args.get("id", ""))
    if not await _tokens(ctx).revoke(ctx.actor, token_id):
        ctx.err(f"no active token {token_id}")
        return 1
    if ctx.gateway is not None:
        ctx.out(f"revoked {token_id} (the running gateway no longer accepts it)")
    else:
        ctx.out(
            f"revoked {token_id} (running gateways stop accepting it within "
            f"{ctx.config.http.token_cache_seconds:g} s)"
        )
    return 0


@op("audit.verify")
async def audit_verify(ctx: OpContext, args: dict[str, Any]) -> int:
    """Exit 0 if the chain is intact, 1 with the first bad entry."""
    result = await AuditLog(trail=ctx.audit).verify(ctx.actor)
    if result.ok:
        ctx.out(
            f"audit chain intact: {result.entries} entries, head {result.head_seq}"
            f" {result.head_hash}"
        )
        return 0
    ctx.out(f"audit chain BROKEN at entry {result.first_bad_seq}: {result.reason}")
    return 1


# -- the console -------------------------------------------------------------------------


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
    if args.action == "add":
        password = _read_password(args)
        if password is None:
            return 1
        request = {"username": args.username, "role": args.role, "password": password}
        return client.run(config, "user.add", request)
    if args.action == "list":
        return client.run(config, "user.list", {})
    return client.run(config, f"user.{args.action}", {"username": args.username})


def token(args: argparse.Namespace, config: Config) -> int:
    """`smsgw token create|list|revoke`."""
    if args.action == "create":
        parse_scopes(args.scope)  # a typo fails here, before any service is asked
        request = {"name": args.name, "scope": args.scope, "purpose": args.purpose}
        return client.run(config, "token.create", request)
    if args.action == "list":
        return client.run(config, "token.list", {})
    return client.run(config, "token.revoke", {"id": args.id})


def audit(args: argparse.Namespace, config: Config) -> int:
    """`smsgw audit verify [--postgresql CONNINFO]`."""
    if args.postgresql:  # the shared store's chains and anchors
        return store_migrate_cmd.cmd_verify_cluster(args, config)
    store_migrate_cmd.refuse_cluster_options(args)
    return client.run(config, "audit.verify", {})


def add_parsers(sub: Any, load: Callable[[str | None], Config]) -> None:
    def command(run: Callable[[argparse.Namespace, Config], int]) -> Any:
        return lambda args: run(args, load(args.config))

    user_parser = sub.add_parser("user", help="manage admin panel users")
    user_sub = user_parser.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser("add", help="add a user (the password is asked twice)")
    add.add_argument("username", help="the sign-in name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role], help="its role")
    add.add_argument("--password-file", help="read the password from this file's first line")
    user_sub.add_parser("list", help="list users (id, state, role, second factor, name)")
    for action, text in USER_CHANGES.items():
        user_sub.add_parser(action, help=text).add_argument("username", help="the user's name")
    user_parser.set_defaults(func=command(user))

    token_parser = sub.add_parser("token", help="manage API tokens")
    token_sub = token_parser.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("--scope", default="send,read", help="comma-separated: " + ",".join(SCOPES))
    create.add_argument("--name", default="api", help="a name to know it by (default: api)")
    create.add_argument(
        "--purpose",
        choices=token_purposes.NAMES,
        help="the purpose of its sends that name none (else [consent] default_purpose)",
    )
    token_sub.add_parser("list", help="list tokens (ids and scopes, never secrets)")
    token_sub.add_parser("revoke", help="revoke a token by id").add_argument(
        "id", help="the token's id (see token list)"
    )
    token_parser.set_defaults(func=command(token))

    audit_parser = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit_parser.add_subparsers(dest="action", required=True)
    store_migrate_cmd.add_verify_options(
        audit_sub.add_parser("verify", help="check the hash chain; exit 1 if broken")
    )
    audit_parser.set_defaults(func=command(audit))

    for group in (user_sub, token_sub, audit_sub):
        for sp in group.choices.values():
            sp.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else embedded)")
