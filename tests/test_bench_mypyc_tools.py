"""The mypyc measurement's tools (bench/README.md, "mypyc over the send, accept and
consent paths"): a real cProfile dump summed per module, and the CPU lines the profile
scripts print, as mypyc_compare.py reads them."""

from __future__ import annotations

import cProfile
import pstats
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import cpu_by_module  # noqa: E402 - bench/ is put on the path just above
import mypyc_compare  # noqa: E402

from drivers import text  # noqa: E402


def test_a_profile_dump_is_summed_per_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(200):
        text.split("Your appointment is on Monday at 9:30. Reply STOP to opt out. " * 4)
    profile.disable()
    dump = tmp_path / "split.pstats"
    profile.dump_stats(dump)

    rows = dict(cpu_by_module.by_module(pstats.Stats(str(dump))))
    assert rows["drivers/text.py"] > 0
    assert any(name.startswith("C: ") for name in rows)
    assert cpu_by_module.main([str(dump), "--per", "200"]) == 0
    out = capsys.readouterr().out
    assert "drivers/text.py" in out
    assert "us per message in all, ours" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("filename", "function", "module"),
    [
        ("/w/gateway/consent/policy.py", "decide", "gateway/consent/policy.py"),
        ("/w/.venv/lib/python3.11/site-packages/aiohttp/web_protocol.py", "f", "aiohttp"),
        ("/usr/lib/python3.11/asyncio/events.py", "_run", "asyncio"),
        ("/usr/lib/python3.11/enum.py", "__call__", "enum"),
        ("~", "<built-in method builtins.len>", "C: builtins.len"),
    ],
)
def test_a_functions_module(filename: str, function: str, module: str) -> None:
    assert cpu_by_module.module_of(filename, function) == module


@pytest.mark.parametrize(
    ("line", "loop", "others"),
    [
        # profile_dispatch.py, profile_accept.py, profile_consent.py
        (
            "5000 messages in 2.10 s: 2,383/s; CPU per message: event loop 252.0 us,"
            " other threads 152.0 us",
            252.0,
            152.0,
        ),
        (
            "  CPU per message: event loop 846.0 us, other threads 106.6 us; foreign load 0.00",
            846.0,
            106.6,
        ),
        ("checks on: 6000 sends; CPU per message: event loop 54.7 us, writer 47.6 us", 54.7, 47.6),
    ],
)
def test_the_profile_scripts_cpu_lines_are_read(line: str, loop: float, others: float) -> None:
    found = mypyc_compare.CPU_LINE.findall(line)
    assert [(float(a), float(b)) for a, b in found] == [(loop, others)]
