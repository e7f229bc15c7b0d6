"""User administration (admin role): add, change role, disable, reset TOTP, end
sessions, and which roles must use a second factor. Every change is audited."""

from __future__ import annotations

from aiohttp import web

from gateway.admin import passwords
from gateway.admin.accounts import InvalidUsername
from gateway.admin.panel import actor, panel
from gateway.admin.render import error_response, redirect, render
from gateway.admin.routing import ADMIN, PanelRoute, current_user
from gateway.panel_users import Role, User, UserExists

USERS_PATH = "/users"


async def _page(
    request: web.Request, *, status: int = 200, error: str | None = None
) -> web.Response:
    p = panel(request)
    users = await p.repo.users()
    return render(
        request,
        "users.html",
        status=status,
        error=error,
        users=users,
        roles=[r.value for r in Role],
        totp_roles={r.value for r in await p.accounts.totp_required_roles()},
        configured_roles=set(p.gateway.config.admin.totp_required_roles),
    )


async def users_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


def _role(value: str | None) -> Role | None:
    try:
        return Role(value or "")
    except ValueError:
        return None


async def add_user(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("username", "")).strip()
    role = _role(str(form.get("role", "")))
    password = str(form.get("password", ""))
    if role is None:
        return await _page(request, status=422, error="Choose one of the roles.")
    try:
        await panel(request).accounts.create_user(username, role, password, actor(request))
    except (InvalidUsername, passwords.WeakPassword) as e:
        return await _page(request, status=422, error=str(e))
    except UserExists:
        return await _page(request, status=409, error="A user with this name exists.")
    return redirect(USERS_PATH)


async def _target(request: web.Request) -> User | None:
    found = await panel(request).repo.user_by_id(request.match_info["user_id"])
    return None if found is None else found[0]


def _no_user(request: web.Request) -> web.Response:
    return error_response(request, 404, "not_found", "no such user")


def _not_yourself(request: web.Request) -> web.Response:
    return error_response(
        request, 409, "own_account", "an admin cannot do this to their own account"
    )


async def set_role(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    if target is None:
        return _no_user(request)
    if target.id == current_user(request).id:
        return _not_yourself(request)
    if target.from_directory:
        return error_response(
            request, 409, "directory_managed", "this user's role comes from their directory groups"
        )
    role = _role(str((await request.post()).get("role", "")))
    if role is None:
        return await _page(request, status=422, error="Choose one of the roles.")
    p = panel(request)
    await p.repo.set_role(target.id, role)
    await p.gateway.audit.record(actor(request), "user_role_changed", "user", target.id, role=role)
    return redirect(USERS_PATH)


async def disable_user(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    if target is None:
        return _no_user(request)
    if target.id == current_user(request).id:
        return _not_yourself(request)
    p = panel(request)
    await p.repo.set_disabled(target.id, p.gateway.clock.time())
    await p.gateway.audit.record(actor(request), "user_disabled", "user", target.id)
    return redirect(USERS_PATH)


async def enable_user(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    if target is None:
        return _no_user(request)
    p = panel(request)
    await p.repo.set_disabled(target.id, None)
    await p.gateway.audit.record(actor(request), "user_enabled", "user", target.id)
    return redirect(USERS_PATH)


async def reset_totp(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    if target is None:
        return _no_user(request)
    p = panel(request)
    await p.repo.reset_totp(target.id)
    await p.gateway.audit.record(actor(request), "totp_reset", "user", target.id)
    return redirect(USERS_PATH)


async def end_sessions(request: web.Request) -> web.StreamResponse:
    target = await _target(request)
    if target is None:
        return _no_user(request)
    p = panel(request)
    ended = await p.repo.end_user_sessions(target.id)
    await p.gateway.audit.record(actor(request), "sessions_ended", "user", target.id, count=ended)
    return redirect(USERS_PATH)


async def set_totp_policy(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    chosen = {_role(str(v)) for v in form.getall("totp_required", [])}
    roles = sorted(r for r in chosen if r is not None)
    p = panel(request)
    await p.repo.set_totp_required(roles)
    await p.gateway.audit.record(
        actor(request), "totp_policy_changed", "role_policy", None, roles=",".join(roles)
    )
    return redirect(USERS_PATH)


_ONE = USERS_PATH + "/{user_id:[0-9a-f]{12}}"

ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", USERS_PATH, users_page, ADMIN, False, "users"),
    PanelRoute("POST", USERS_PATH, add_user, ADMIN, False, "user_add"),
    PanelRoute("POST", _ONE + "/role", set_role, ADMIN, False, "user_role"),
    PanelRoute("POST", _ONE + "/disable", disable_user, ADMIN, False, "user_disable"),
    PanelRoute("POST", _ONE + "/enable", enable_user, ADMIN, False, "user_enable"),
    PanelRoute("POST", _ONE + "/reset-totp", reset_totp, ADMIN, False, "user_reset_totp"),
    PanelRoute("POST", _ONE + "/end-sessions", end_sessions, ADMIN, False, "user_end_sessions"),
    PanelRoute("POST", USERS_PATH + "/totp-policy", set_totp_policy, ADMIN, False, "totp_policy"),
)
