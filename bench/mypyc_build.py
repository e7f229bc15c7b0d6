"""A mypyc-compiled copy of the hot modules, to measure against the pure-Python tree.

    .venv/bin/python bench/mypyc_build.py                      # into /tmp/smsgw-mypyc
    PYTHONPATH=/tmp/smsgw-mypyc .venv/bin/python bench/profile_dispatch.py --n 5000
    PYTHONPATH=/tmp/smsgw-mypyc .venv/bin/pytest --import-mode=append tests/test_smpp_pdu.py

The repository is not touched: `gateway/` and `drivers/` are copied to `--out`, the
changes mypyc needs are made there (each one asserted, so a source change that makes one
stale fails loudly), and the modules of the send path, the accept path and the consent
checks are compiled in place (one shared library in `--out`, an extension module beside
each `.py`). With `--out` first on PYTHONPATH the bench scripts import the compiled copy
(the editable install's finder comes after sys.path). The figures are in bench/README.md
("mypyc over the send, accept and consent paths").
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MYPYC = Path(sys.executable).parent / "mypyc"

# The modules with the largest own time under cProfile (bench/cpu_by_module.py) on each
# path. Left pure: gateway/intake.py (msgspec Structs: `smsgw run` failed at start-up
# compiled, bench/README.md), gateway/store/store.py (async generators: unsupported) and
# gateway/web/connections.py (subclasses of aiohttp's classes, which have __slots__; as
# non-native classes the generated C does not compile, mypy 2.4.1).
SEND = (
    "drivers/smpp/session.py",
    "drivers/smpp/pdu_quick.py",
    "drivers/smpp/driver.py",
    "drivers/smpp/pdu.py",
    "drivers/smpp/encoding.py",
    "drivers/smpp/in_flight.py",
    "drivers/smpp/dlr.py",
    "drivers/smpp/inbound.py",
    "drivers/text.py",
    "gateway/dispatch_group.py",
    "gateway/scheduler.py",
    "gateway/scheduler_feed.py",
    "gateway/routes.py",
    "gateway/shares.py",
    "gateway/throttle_adapt.py",
    "gateway/store/crypto.py",
)
ACCEPT = (
    "gateway/usecases/messages.py",
    "gateway/store/writer.py",
    "gateway/api/handlers.py",
    "gateway/api/server.py",
    "gateway/web/guard.py",
    "gateway/web/context.py",
    "gateway/web/client.py",
    "gateway/web/headers.py",
    "gateway/models.py",
    "gateway/tokens.py",
    "drivers/clock.py",
)
CONSENT = (
    "gateway/consent/policy.py",
    "gateway/consent/ledger.py",
    "gateway/consent/state_cache.py",
)

# Classes mypyc cannot compile as native classes: a subclass of RuntimeError and one
# built with `cls.__new__(cls)`.
NOT_NATIVE = {
    "gateway/store/writer.py": ("WriterClosed",),
    "gateway/consent/policy.py": ("GroupView",),
}
FUTURE = "from __future__ import annotations\n"
IMPORT = "\nfrom mypy_extensions import mypyc_attr\n"
DECORATOR = "@mypyc_attr(native_class=False)\n"


def replace(text: str, old: str, new: str) -> str:
    if old not in text:
        raise SystemExit(f"mypyc_build: {old!r} is gone from the source; update this script")
    return text.replace(old, new)


def adapt(root: Path) -> None:
    """The changes mypyc needs, in the copy only."""
    for rel, classes in NOT_NATIVE.items():
        path = root / rel
        text = replace(
            path.read_text(), FUTURE, FUTURE + "\nfrom mypy_extensions import mypyc_attr\n"
        )
        for name in classes:
            text, found = re.subn(
                rf"^class {name}\b",
                f"@mypyc_attr(native_class=False)\nclass {name}",
                text,
                flags=re.M,
            )
            if found != 1:
                raise SystemExit(f"mypyc_build: class {name} is gone from {rel}")
        path.write_text(text)
    # Surrogates are refused in string literals; `re` reads the same escapes itself.
    text_py = root / "drivers/text.py"
    text = text_py.read_text()
    for pattern in (
        '"[\\ud800-\\udbff][\\udc00-\\udfff]|."',
        '"([\\ud800-\\udbff][\\udc00-\\udfff])|[\\ud800-\\udfff]"',
        '"[\\ud800-\\udfff]"',
    ):
        text = replace(text, pattern, "r" + pattern)
    text_py.write_text(text)
    # A ClassVar default in a slotted frozen dataclass fails at import compiled
    # ("attribute 'default' is read-only"): the defaults go to a table by field type.
    pdu = root / "drivers/smpp/pdu.py"
    text = pdu.read_text()
    for value in ('""', "0", 'b""'):
        text = replace(text, f"    default: ClassVar[Value] = {value}\n", "")
    field = "Field = CString | Integer | OctetString\n"
    defaults = '_DEFAULT: dict[type, Value] = {CString: "", Integer: 0, OctetString: b""}\n'
    text = replace(text, field, field + defaults)
    text = replace(
        text,
        "params.get(spec_field.name, spec_field.default)",
        "params.get(spec_field.name, _DEFAULT[type(spec_field)])",
    )
    pdu.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/smsgw-mypyc"))
    p.add_argument("--only", choices=("send", "accept", "consent"), action="append")
    args = p.parse_args(argv)
    sets = {"send": SEND, "accept": ACCEPT, "consent": CONSENT}
    modules = [m for name in args.only or sets for m in sets[name]]
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    for package in ("gateway", "drivers"):
        shutil.copytree(
            REPO / package, args.out / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy2(REPO / "pyproject.toml", args.out)  # mypy's settings (strict)
    (args.out / "admin_ui").symlink_to(REPO / "admin_ui")  # the panel's, found beside gateway/
    adapt(args.out)
    started = time.monotonic()
    subprocess.run([str(MYPYC), *modules], cwd=args.out, check=True, stdout=subprocess.DEVNULL)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"mypyc: {len(modules)} modules compiled in {time.monotonic() - started:.0f} s"
        f" ({children.ru_utime + children.ru_stime:.0f} s of CPU) into {args.out}"
    )
    print(f"use: PYTHONPATH={args.out} .venv/bin/python bench/<script>.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
