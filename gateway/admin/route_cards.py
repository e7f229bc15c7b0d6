"""Route cards for the dashboard and the routes page, from any driver's health.

A card shows what every route has (state, window in use, rate and whether the carrier
throttled it, queued and sending counts, counters) and, for a route made of units (a
modem bank), one row per unit from `RouteHealth.members`: the usual columns first
(state, signal, registration, operator, sent today, errors), any other plain value the
driver reports after them. The panel never needs to know the driver's type. A
modem's `signal` is the CSQ figure (0-31, None when the modem reports 99, unknown): it
is shown as dBm (-113 + 2n) with bars and a word, never as the bare number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.app import Gateway
from gateway.routes import RouteRuntime

UNIT_COLUMNS = ("state", "signal", "registration", "operator", "sent_today", "errors")


def _plain(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return None


SIGNAL_WORDS = ("no signal", "marginal", "fair", "good", "excellent")


def signal_cell(csq: object) -> dict[str, Any]:
    """A CSQ figure as text and 0-4 bars (the thresholds most modem vendors use)."""
    if not isinstance(csq, int) or isinstance(csq, bool) or not 0 <= csq <= 31:
        return {"text": "unknown", "bars": 0}
    bars = 0 if csq == 0 else 1 if csq < 10 else 2 if csq < 15 else 3 if csq < 20 else 4
    dbm = -113 + 2 * csq
    return {
        "text": f"\u2212{-dbm} dBm, {SIGNAL_WORDS[bars]} ({bars} of 4 bars)",
        "bars": bars,
    }


def _cell(column: str, value: object) -> object:
    return signal_cell(value) if column == "signal" else _plain(value)


def unit_rows(members: Mapping[str, Mapping[str, object]]) -> tuple[list[str], list[Any]]:
    """(the usual columns present, one row per unit: name, cells, other values)."""
    present = {key for m in members.values() for key in m}
    columns = [c for c in UNIT_COLUMNS if c in present]
    rows = []
    for name, values in members.items():
        extra = {
            k: _plain(v)
            for k, v in sorted(values.items())
            if k not in UNIT_COLUMNS and _plain(v) is not None
        }
        rows.append(
            {
                "name": name,
                "cells": [_cell(c, values.get(c)) for c in columns],
                "extra": extra,
                # Restore instead of Drain: drained, or stopped on its SIM (retry it)
                "drained": values.get("state") in ("drained", "sim_error"),
            }
        )
    return columns, rows


def _throttled(gw: Gateway, route: RouteRuntime) -> bool:
    configured, rate = route.config.rate, route.bucket.rate
    lowered = configured is not None and rate is not None and rate < configured
    return lowered or route.cool_until > gw.clock.monotonic()


def route_cards(gw: Gateway, sending: Mapping[str, int]) -> list[dict[str, Any]]:
    waiting = gw.scheduler.depths_by_route()
    cards = []
    for route in gw.routes.values():
        health = route.health()
        # `members` arrives with the modem bank (drivers/base.py); older drivers lack it.
        members: Mapping[str, Mapping[str, object]] = getattr(health, "members", None) or {}
        columns, units = unit_rows(members)
        counters = dict(sorted(health.counters.items()))
        counters.update({f"gateway_{k}": v for k, v in sorted(route.counters.items())})
        rate = route.bucket.rate
        cards.append(
            {
                "name": route.name,
                "type": route.config.type,
                "state": "paused" if route.paused else health.state.value,
                "detail": health.detail,
                # Parked for refused credentials: offer Resume, which binds once more.
                "paused": route.paused or route.awaits_resume,
                "auth_failed": health.state.value == "parked",  # the alert, for any driver
                "throttled": _throttled(gw, route),
                "rate": None if rate is None else round(rate, 2),
                "configured_rate": route.config.rate,
                "discovered": route.discovered_rate is not None,  # found from throttling
                "window": route.config.window,
                "in_flight": route.in_flight,
                "queued": waiting["queued"].get(route.name, 0),
                "scheduled": waiting["scheduled"].get(route.name, 0),
                "sending": sending.get(route.name, 0),
                "counters": counters,
                "unit_columns": columns,
                "units": units,
                "drainable": callable(getattr(route.driver, "drain", None)),
            }
        )
    return cards
