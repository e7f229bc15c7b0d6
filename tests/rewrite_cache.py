"""pytest's rewritten test modules, written once before the xdist workers start.

pytest rewrites the asserts of every test module and conftest as it imports them, and
caches the result in `__pycache__/*-pytest-*.pyc` (hash-checked against the source) —
unless Python writes no bytecode (PYTHONDONTWRITEBYTECODE, as on the build machines).
Then each worker parsed, rewrote and compiled all 300 test files again: 5-10 s of CPU a
worker before its first test. The controller writes the cache here, in one pass that
skips every file whose cached copy still matches its source; the workers read it even
with PYTHONDONTWRITEBYTECODE set. This uses pytest's own functions for both steps, so
the files are exactly those it would have written; on a pytest without them (they are
internal) nothing is written and the workers rewrite as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def write(config: pytest.Config, tests: Path) -> int:
    """Rewrite and cache the test modules and conftests under `tests` that have no
    current cached copy; how many were written."""
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        read_pyc, rewrite_test, write_pyc = (
            rewrite._read_pyc,
            rewrite._rewrite_test,
            rewrite._write_pyc,
        )
        cache_dir, tail = rewrite.get_cache_dir, rewrite.PYC_TAIL
    except (ImportError, AttributeError, KeyError):
        return 0
    if config.getoption("assertmode") != "rewrite":
        return 0
    written = 0
    for fn in sorted(tests.rglob("*.py")):
        if "node_modules" in fn.parts or not (
            fn.name == "conftest.py" or fn.name.startswith("test_")
        ):
            continue
        pyc = cache_dir(fn) / (fn.name[:-3] + tail)
        if read_pyc(fn, pyc, state.trace) is not None:
            continue
        pyc.parent.mkdir(exist_ok=True)
        source_hash, co = rewrite_test(fn, config)
        written += write_pyc(state, co, source_hash, pyc)
    return written
