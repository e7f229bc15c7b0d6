"""Pure parts of the modem route: answer parsers, SIM budgets, options."""

from __future__ import annotations

from datetime import datetime

import msgspec
import pytest

from drivers.clock import FakeClock
from drivers.modem import commands as cmd
from drivers.modem.budget import Budget
from drivers.modem.options import ModemBankOptions, ModemOptions
from gateway.config import ConfigError, from_mapping
from tests.test_config import EXAMPLE


def test_cpin_states() -> None:
    assert cmd.parse_cpin(["+CPIN: READY"]) == "ready"
    assert cmd.parse_cpin(["+CPIN: SIM PIN"]) == "pin"
    assert cmd.parse_cpin(["+CPIN: SIM PUK"]) == "puk"
    assert cmd.parse_cpin(["+CPIN: PH-SIM PIN"]) == "other"
    assert cmd.parse_cpin(["nothing"]) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0,1", "registered"),
        ('2,5,"00C3","0000ABCD",7', "roaming"),
        ("1", "registered"),  # URC
        ("2", "searching"),
        ('1,"00C3","0000ABCD"', "registered"),  # URC with location
        ("0,3", "denied"),
        ("x", None),
    ],
)
def test_registration(value: str, expected: str | None) -> None:
    assert cmd.parse_registration(value) == expected


def test_signal_operator_mr_and_indices() -> None:
    assert cmd.parse_csq(["+CSQ: 23,99"]) == 23
    assert cmd.parse_csq(["+CSQ: 99,99"]) is None
    assert cmd.parse_rssi_urc("17") == 17
    assert cmd.parse_cops(['+COPS: 0,0,"Emulated Telecom",7']) == "Emulated Telecom"
    assert cmd.parse_cops(["+COPS: 0"]) is None
    assert cmd.parse_cmgs(["+CMGS: 300"]) == 300 & 0xFF
    assert cmd.parse_storage_index('"SM",12') == 12
    assert cmd.parse_storage_index('"SM"') is None
    assert cmd.parse_cmgr(["+CMGR: 1,,24", "07ABCD"]) == cmd.Record(1, "07ABCD")
    assert cmd.parse_cmgr(["+CMGR: 1,,24"]) is None
    listed = cmd.parse_cmgl(["+CMGL: 3,1,,24", "07AB", "+CMGL: 5,0,,30", "07CD"])
    assert [(s.index, s.pdu) for s in listed] == [(3, "07AB"), (5, "07CD")]


def test_identifiers_and_mask() -> None:
    assert cmd.parse_identifier(["356938035643809"]) == "356938035643809"
    assert cmd.parse_identifier(["+QCCID: 8931440400012345678F"]) == "8931440400012345678F"
    assert cmd.parse_identifier(['^ICCID: "89314404000123456789"']) == "89314404000123456789"
    assert cmd.mask("356938035643809") == "…3809"
    assert cmd.mask(None) is None
    assert cmd.first_text(["Quectel"]) == "Quectel"
    assert cmd.first_text(["+CGMM: EC25"]) == "EC25"
    with pytest.raises(ValueError, match="4 to 8"):
        cmd.quote_pin("12")
    assert cmd.quote_pin("1234") == 'AT+CPIN="1234"'


def test_budget_minute_slides() -> None:
    clock = FakeClock()
    budget = Budget(clock, per_minute=3)
    budget.spend(2)
    clock.advance(10)
    budget.spend(1)
    assert budget.wait(1) == pytest.approx(50)  # the first two expire 60 s after they went
    assert budget.wait(2) == pytest.approx(50)
    clock.advance(50)
    assert budget.wait(2) == 0
    assert budget.wait(4) == float("inf")


def test_budget_day_and_month_reset_on_the_calendar() -> None:
    clock = FakeClock()
    budget = Budget(clock, per_day=2, per_month=3)
    budget.spend(2)
    assert budget.sent_today == 2
    now = datetime.fromtimestamp(clock.time()).astimezone()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    to_tomorrow = 86400 - (now - midnight).total_seconds()
    assert budget.wait(1) == pytest.approx(to_tomorrow, abs=3601)  # DST may shift an hour
    clock.advance(budget.wait(1))
    assert budget.sent_today == 0 and budget.sent_this_month in (0, 2)
    if budget.sent_this_month == 2:  # same month: one part left
        budget.spend(1)
        assert budget.wait(1) > 0


def test_options_are_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    for struct in (ModemBankOptions, ModemOptions):
        for name in struct.__struct_fields__:
            assert f"{name} =" in text, f"modem option {name} undocumented"


def test_options_validate() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"modems": []}, ModemBankOptions)
    opts = msgspec.convert({"modems": [{"name": "a", "port": "/dev/ttyUSB0"}]}, ModemBankOptions)
    assert opts.modems[0].baud == 115200


@pytest.mark.parametrize("what", ["name", "port"])
def test_config_refuses_two_modems_alike(what: str) -> None:
    modems = [{"name": "a", "port": "/dev/ttyUSB0"}, {"name": "b", "port": "/dev/ttyUSB1"}]
    modems[1][what] = modems[0][what]
    with pytest.raises(ConfigError, match=f"routes\\[0\\].*same {what}"):
        from_mapping({"routes": [{"name": "bank", "type": "modem", "modems": modems}]})


def test_a_seeded_budget_remembers_what_was_sent_before_a_restart() -> None:
    clock = FakeClock()
    budget = Budget(clock, per_day=5, per_month=8)
    budget.seed(today=4, this_month=7)
    assert (budget.sent_today, budget.sent_this_month) == (4, 7)
    assert budget.wait(1) == 0
    assert budget.wait(2) > 0  # the day's cap
    budget.spend(1)
    assert budget.wait(1) > 0
