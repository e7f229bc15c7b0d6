"""`smsgw send`: one message through a running gateway's HTTP API.

It posts to `/api/v1/messages` and prints the gateway's answer (JSON). With `--wait`
it then follows the message (`GET /api/v1/messages/ID`, which needs the `read` scope),
prints each state it reaches, and exits with what became of it:

    0  delivered          3  expired
    1  failed, blocked, cancelled, or the request was refused
    2  usage (no token)   4  no final state within --timeout (the last one is printed)

A message whose class asks for no receipt stays `sent`: `--wait` then ends at the
timeout with 4, printing `sent`.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.config import Config
from gateway.consent import token_purposes

ENV_TOKEN = "SMSGW_TOKEN"  # noqa: S105 - the variable's name, not a secret
EXIT = {"delivered": 0, "failed": 1, "blocked": 1, "cancelled": 1, "expired": 3}
TIMED_OUT = 4
POLL_FIRST, POLL_MAX = 0.2, 2.0  # seconds between looks at the message, growing


def add_parser(sub: Any, load: Callable[[str | None], Config], env_config: str) -> None:
    send = sub.add_parser("send", help="send a message through a running gateway")
    send.add_argument("--to", required=True, help="the recipient's number (E.164 or national)")
    send.add_argument("--body", required=True, help="the text to send")
    send.add_argument(
        "--priority",
        choices=["critical", "high", "normal", "bulk"],
        help="the class (default: the purpose's)",
    )
    send.add_argument(
        "--purpose",
        choices=token_purposes.NAMES,
        help="why it is sent (default: the token's, else the gateway's default_purpose)",
    )
    send.add_argument("--route", help="send through this route (a name from [[routes]])")
    send.add_argument(
        "--expires-in",
        type=float,
        metavar="SECONDS",
        help="give up (state expired) if not sent within this many seconds",
    )
    send.add_argument(
        "--wait",
        action="store_true",
        help="follow the message to a final state and exit with it"
        " (0 delivered, 1 failed, 3 expired, 4 timeout); the token needs the read scope",
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long --wait waits for a final state (default 120)",
    )
    send.add_argument("--url", help="the gateway's base URL (default: from the configuration)")
    send.add_argument("--config", help=f"TOML file (default: ${env_config}, else embedded)")
    send.add_argument("--token", help=f"API token (default: ${ENV_TOKEN})")
    send.set_defaults(func=lambda args: run(args, load))


def run(args: argparse.Namespace, load: Callable[[str | None], Config]) -> int:
    token = args.token or os.environ.get(ENV_TOKEN)
    if not token:
        print(f"smsgw send: give --token or set {ENV_TOKEN}", file=sys.stderr)
        return 2
    payload: dict[str, Any] = {"to": args.to, "body": args.body}
    if args.priority:  # else the purpose's class
        payload["priority"] = args.priority
    if args.purpose:  # else the token's default purpose, else the gateway's
        payload["purpose"] = args.purpose
    if args.route:
        payload["route"] = args.route
    if args.expires_in is not None:
        expires = datetime.now(UTC).timestamp() + args.expires_in
        payload["expires_at"] = datetime.fromtimestamp(expires, UTC).isoformat()
    url, context = (args.url, None) if args.url else own_url(load(args.config))
    api = Api(url.rstrip("/") + "/api/v1/messages", token, context)
    try:
        accepted = api.call("POST", "", payload)
        print(json.dumps(accepted))
        if not args.wait:
            return 0
        return follow(api, str(accepted["id"]), args.timeout)
    except ApiRefused as e:
        print(e.body, file=sys.stderr)
        return 1
    except urllib.error.URLError as e:
        print(f"smsgw send: cannot reach {url}: {e.reason}", file=sys.stderr)
        return 1


def follow(api: Api, message_id: str, timeout: float) -> int:
    """Print each state the message reaches; its exit status (module docstring)."""
    deadline = time.monotonic() + timeout
    pause, last = POLL_FIRST, None
    while True:
        message = api.call("GET", "/" + message_id)
        state = str(message["status"])
        if state != last:
            code = message.get("error_code")
            print(f"{message_id} {state}" + (f" {code}" if code else ""), flush=True)
            last = state
        if state in EXIT:
            return EXIT[state]
        left = deadline - time.monotonic()
        if left <= 0:
            print(
                f"smsgw send: no final state within {timeout:g} s (last: {state})", file=sys.stderr
            )
            return TIMED_OUT
        time.sleep(min(pause, left))
        pause = min(POLL_MAX, pause * 1.5)


class ApiRefused(Exception):
    def __init__(self, body: str) -> None:
        super().__init__(body)
        self.body = body


class Api:
    def __init__(self, base: str, token: str, context: ssl.SSLContext | None) -> None:
        self._base, self._token, self._context = base, token, context

    def call(self, method: str, path: str, payload: object = None) -> dict[str, Any]:
        req = urllib.request.Request(  # noqa: S310 - the URL is the operator's own gateway
            self._base + path,
            data=None if payload is None else json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._context) as resp:  # noqa: S310
                answer: dict[str, Any] = json.loads(resp.read())
                return answer
        except urllib.error.HTTPError as e:
            raise ApiRefused(e.read().decode()) from None


def own_url(config: Config) -> tuple[str, ssl.SSLContext | None]:
    """The gateway's own address from its configuration: a wildcard listen address is
    reached on loopback, and a TLS listener is trusted through its configured certificate
    (so the self-signed one from `smsgw init --self-signed-cert` works)."""
    host, _, port = config.http.listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)  # noqa: S104
    tls_paths = config.tls_paths
    if tls_paths is None:
        return f"http://{host}:{port}", None
    return f"https://{host}:{port}", ssl.create_default_context(cafile=tls_paths[0])
