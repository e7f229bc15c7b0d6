"""`[consent]`: the policy table over the built-in defaults, programs, and switches.

Checked at load (`problems`), so a bad value stops start-up naming its key; the
runtime takes the merged table from `policy_table`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.consent.inbound_config import KeywordsConfig, RepliesConfig
from gateway.consent.purposes import (
    CLIENT_PURPOSES,
    DEFAULT_POLICIES,
    Cap,
    ClassName,
    ConsentRule,
    OptOutRule,
    OverCap,
    Purpose,
    PurposePolicy,
    Window,
)

ClientPurpose = Literal[
    "appointment",
    "medication",
    "results",
    "procedure",
    "discharge",
    "informational",
    "marketing",
    "emergency",
]
_RANK: dict[str, int] = {"critical": 0, "high": 1, "normal": 2, "bulk": 3}


class PurposeOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[consent.purposes.<purpose>]`: any key left out keeps the built-in default."""

    priority: ClassName | None = None
    highest: ClassName | None = None
    consent: ConsentRule | None = None
    opt_out: OptOutRule | None = None
    window: str | None = None  # "HH:MM-HH:MM" local sending hours; "" for any time
    caps: tuple[str, ...] | None = None  # "COUNT/PERIOD", e.g. "1/1d", "3/7d"
    over_cap: OverCap | None = None


class ProgramConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[[consent.programs]]`: one sender identity (a short code or long number).

    A keyword sent to one of `senders` (the number the patient texted) decides for
    this program only, and binds the messages that leave by its `routes`. Numbers and
    routes in no program belong to the program named `default`."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    senders: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()


class ConsentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True  # false only for a benchmark's baseline: no checks at all
    default_purpose: ClientPurpose | None = None  # for a send naming none, if its token has none
    revoke_all: bool = False  # MSG-7: one STOP stops every purpose (the FCC's pending rule)
    programs: tuple[ProgramConfig, ...] = ()
    purposes: dict[str, PurposeOverride] = msgspec.field(default_factory=dict)
    # -- inbound keywords and their replies (i12-inbound; checked by inbound_problems) --
    keywords: dict[str, KeywordsConfig] = msgspec.field(default_factory=dict)
    replies: dict[str, RepliesConfig] = msgspec.field(default_factory=dict)
    language: str = "en"  # replies when neither the contact nor the keyword decide
    brand: str = "Hospital"  # a program's title in replies unless program_titles has one
    program_titles: dict[str, str] = msgspec.field(default_factory=dict)
    help_contact: str = "call your care team"  # where HELP sends people: number, URL
    reply_segments: int = 1  # a reply must fit this many SMS (1: 160 GSM-7 characters)
    auto_replies_per_hour: int = 3  # per number (R-OPT-1); an opt-out's one confirmation
    answer_help_opted_out: bool = True  # false: HELP from an opted-out number is not answered

    def problems(self) -> str | None:
        try:
            policy_table(self)
        except ValueError as e:
            return str(e)
        names = [p.name for p in self.programs]
        for i, name in enumerate(names):
            if name in names[:i]:
                return f"consent.programs[{i}].name: duplicate program name {name!r}"
        return None

    def program_for_route(self, route: str) -> str:
        for p in self.programs:
            if route in p.routes:
                return p.name
        return DEFAULT_PROGRAM

    def program_for_sender(self, recipient: str | None) -> str:
        for p in self.programs:
            if recipient is not None and recipient in p.senders:
                return p.name
        return DEFAULT_PROGRAM


DEFAULT_PROGRAM = "default"


def policy_table(config: ConsentConfig) -> dict[Purpose, PurposePolicy]:
    """The built-in table with the config's overrides; ValueError names the bad key."""
    client = {p.value: p for p in CLIENT_PURPOSES}
    table = dict(DEFAULT_POLICIES)
    for name, o in config.purposes.items():
        where = f"consent.purposes.{name}"
        if name not in client:
            allowed = ", ".join(client)
            raise ValueError(f"{where}: no such purpose (one of {allowed})")
        purpose = client[name]
        base = table[purpose]
        try:
            window = (
                base.window if o.window is None else Window.parse(o.window) if o.window else None
            )
        except ValueError as e:
            raise ValueError(f"{where}.window: {e}") from None
        try:
            caps = base.caps if o.caps is None else tuple(Cap.parse(c) for c in o.caps)
        except ValueError as e:
            raise ValueError(f"{where}.caps: {e}") from None
        policy = PurposePolicy(
            purpose,
            o.priority or base.priority,
            o.highest or base.highest,
            o.consent or base.consent,
            o.opt_out or base.opt_out,
            window,
            caps,
            o.over_cap or base.over_cap,
        )
        if _RANK[policy.priority] < _RANK[policy.highest]:
            raise ValueError(
                f"{where}.priority: {policy.priority!r} is more urgent than the purpose's"
                f" highest class {policy.highest!r}"
            )
        table[purpose] = policy
    return table
