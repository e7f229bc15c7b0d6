"""Sign-in, second factor, sign-out and the user's own account pages."""

from __future__ import annotations

import math

from aiohttp import web

from gateway.admin import passwords, totp
from gateway.admin.panel import (
    ENROL_PATH,
    LANDING_PATH,
    LOGIN_PATH,
    SESSION_COOKIE,
    TOTP_PATH,
    actor,
    clear_cookie,
    panel,
    start_session_cookie,
)
from gateway.admin.render import redirect, render
from gateway.admin.routing import ANY_ROLE, SESSION, PanelRoute, current_session, current_user
from gateway.panel_users import Credentials, User
from gateway.web.client import client_address

MAX_FIELD = 4 * passwords.MAX_LENGTH


async def _form(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v[:MAX_FIELD] for k, v in form.items() if isinstance(v, str)}


def _source(request: web.Request) -> str:
    return client_address(request)


def _retry_message(seconds: float) -> str:
    return f"Too many failed attempts. Try again in {math.ceil(seconds)} seconds."


async def _credentials(request: web.Request) -> tuple[User, Credentials]:
    found = await panel(request).repo.user_by_id(current_user(request).id)
    assert found is not None, "the gate checked the user exists"
    return found


# -- sign in -------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    session = request.get(SESSION)
    if session is not None and session.stage == "full":
        return redirect(LANDING_PATH)
    return render(request, "login.html", error=None)


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    p = panel(request)
    outcome = await p.accounts.login(
        form.get("username", "").strip(), form.get("password", ""), _source(request)
    )
    name = form.get("username", "").strip()[:128]  # typed again, never the password
    if outcome.retry_after is not None:
        error = _retry_message(outcome.retry_after)
        return render(request, "login.html", status=429, error=error, username=name)
    if outcome.unavailable:
        error = (
            "Sign-in through the hospital directory is not available right now."
            " Try again in a few minutes; an administrator can use a local account."
        )
        return render(request, "login.html", status=503, error=error, username=name)
    if outcome.no_access:
        error = "Your directory account is not in a group that may use smsgw; ask IT for access."
        return render(request, "login.html", status=403, error=error, username=name)
    if outcome.user is None:
        error = "The user name or password is not right."
        return render(request, "login.html", status=401, error=error, username=name)
    old = request.get(SESSION)
    token, _ = await p.sessions.start(
        outcome.user.id,
        "mfa" if outcome.needs_totp else "full",
        replacing=old.id_hash if old is not None else None,
    )
    target = LANDING_PATH
    if outcome.needs_totp:
        target = ENROL_PATH if outcome.needs_enrolment else TOTP_PATH
    response = redirect(target)
    start_session_cookie(response, request, token)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    p = panel(request)
    await p.sessions.end(current_session(request))
    await p.gateway.audit.record(actor(request), "logout", "user", current_user(request).id)
    response = redirect(LOGIN_PATH)
    clear_cookie(response, request, SESSION_COOKIE)
    return response


# -- second factor -------------------------------------------------------------------------


async def totp_page(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    if current_session(request).stage == "full":
        return redirect(LANDING_PATH)
    if not user.totp_enabled:
        return redirect(ENROL_PATH)
    return render(request, "totp.html", error=None)


async def _upgrade(request: web.Request) -> web.Response:
    """Password and code passed: a new session id at full strength."""
    session = current_session(request)
    token, _ = await panel(request).sessions.start(
        session.user_id, "full", replacing=session.id_hash
    )
    response = redirect(LANDING_PATH)
    start_session_cookie(response, request, token)
    return response


async def totp_submit(request: web.Request) -> web.StreamResponse:
    if current_session(request).stage == "full":
        return redirect(LANDING_PATH)
    user, creds = await _credentials(request)
    if not user.totp_enabled:
        return redirect(ENROL_PATH)
    form = await _form(request)
    outcome = await panel(request).accounts.second_factor(
        user, creds, form.get("code", ""), _source(request), enrolling=False
    )
    if outcome.retry_after is not None:
        return render(request, "totp.html", status=429, error=_retry_message(outcome.retry_after))
    if outcome.user is None:
        return render(
            request, "totp.html", status=401, error="That code is not right or was used already."
        )
    return await _upgrade(request)


async def _enrolment(request: web.Request, status: int, error: str | None) -> web.Response:
    p = panel(request)
    user, creds = await _credentials(request)
    secret = creds.totp_secret
    if secret is None:
        secret = totp.new_secret()
        await p.repo.set_totp_secret(user.id, secret)
    uri = totp.provisioning_uri(secret, user.username, p.gateway.config.admin.totp_issuer)
    return render(
        request,
        "totp_enrol.html",
        status=status,
        error=error,
        qr=totp.qr_svg_data_uri(uri),
        secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        required=await p.accounts.totp_required(user.role),
    )


async def enrol_page(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    if user.totp_enabled:
        if current_session(request).stage != "full":
            return redirect(TOTP_PATH)
        return render(request, "totp_enrolled.html")
    return await _enrolment(request, 200, None)


async def enrol_submit(request: web.Request) -> web.StreamResponse:
    user, creds = await _credentials(request)
    if user.totp_enabled:
        return redirect(LANDING_PATH)
    pending = current_session(request).stage != "full"
    form = await _form(request)
    outcome = await panel(request).accounts.second_factor(
        user, creds, form.get("code", ""), _source(request), enrolling=True, completes_login=pending
    )
    if outcome.retry_after is not None:
        return await _enrolment(request, 429, _retry_message(outcome.retry_after))
    if outcome.user is None:
        return await _enrolment(request, 401, "That code is not right; scan the code again.")
    if pending:
        return await _upgrade(request)
    return redirect(LANDING_PATH)


# -- own account ---------------------------------------------------------------------------


async def account_page(request: web.Request) -> web.StreamResponse:
    p = panel(request)
    user = current_user(request)
    return render(
        request,
        "account.html",
        totp_required=await p.accounts.totp_required(user.role),
        idle_minutes=round(p.sessions.idle / 60),
        lifetime_hours=round(p.sessions.absolute / 3600, 1),
    )


MANAGED_BY_DIRECTORY = "Your password is the hospital directory's: change it there."


async def password_page(request: web.Request) -> web.StreamResponse:
    if current_user(request).from_directory:
        return render(request, "password.html", status=409, error=MANAGED_BY_DIRECTORY, done=False)
    return render(request, "password.html", error=None, done=False)


async def password_submit(request: web.Request) -> web.StreamResponse:
    p = panel(request)
    user, creds = await _credentials(request)
    form = await _form(request)
    new = form.get("new_password", "")

    def again(status: int, error: str) -> web.Response:
        return render(request, "password.html", status=status, error=error, done=False)

    if user.from_directory:
        return again(409, MANAGED_BY_DIRECTORY)

    if new != form.get("confirm_password", ""):
        return again(422, "The new password and its confirmation differ.")
    checked = await p.accounts.check_current_password(
        user, creds, form.get("current_password", ""), _source(request)
    )
    if checked.retry_after is not None:
        return again(429, _retry_message(checked.retry_after))
    if checked.signed_out:
        response = redirect(LOGIN_PATH)
        clear_cookie(response, request, SESSION_COOKIE)
        return response
    if checked.user is None:
        return again(403, "The current password is not right.")
    try:
        await p.accounts.set_password(
            user, new, actor(request), keep_session=current_session(request).id_hash
        )
    except passwords.WeakPassword as e:
        return again(422, f"Choose another password: {e}.")
    return render(request, "password.html", error=None, done=True)


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", LOGIN_PATH, login_page, None, False, "login"),
    PanelRoute("POST", LOGIN_PATH, login_submit, None, False, "login_submit"),
    PanelRoute("POST", "/logout", logout, ANY_ROLE, False, "logout", mfa_pending=True),
    PanelRoute("GET", TOTP_PATH, totp_page, ANY_ROLE, False, "totp", mfa_pending=True),
    PanelRoute("POST", TOTP_PATH, totp_submit, ANY_ROLE, False, "totp_submit", mfa_pending=True),
    PanelRoute("GET", ENROL_PATH, enrol_page, ANY_ROLE, False, "totp_enrol", mfa_pending=True),
    PanelRoute(
        "POST", ENROL_PATH, enrol_submit, ANY_ROLE, False, "totp_enrol_submit", mfa_pending=True
    ),
    PanelRoute("GET", "/account", account_page, ANY_ROLE, False, "account"),
    PanelRoute("GET", "/account/password", password_page, ANY_ROLE, False, "password"),
    PanelRoute("POST", "/account/password", password_submit, ANY_ROLE, False, "password_submit"),
)
