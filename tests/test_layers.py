"""Issue 11 point 1: the panel and the API import nothing from each other, and their
message and inbound views go through the application layer, not the store."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(("package", "other"), [("api", "admin"), ("admin", "api")])
def test_front_ends_do_not_import_each_other(package: str, other: str) -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in sorted((GATEWAY / package).glob("*.py"))
        for name in imported_modules(path)
        if name == f"gateway.{other}" or name.startswith(f"gateway.{other}.")
    }
    assert not offenders, f"gateway/{package} imports gateway/{other}: {sorted(offenders)}"


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from gateway.admin import panel\n")
    assert "gateway.admin.panel" in imported_modules(module)


# The views of messages, inbound messages and the queue: they call `gw.usecases`, never
# the store.
VIEWS = [
    GATEWAY / "api" / "handlers.py",
    GATEWAY / "api" / "views.py",
    GATEWAY / "admin" / "pages.py",
]
_STORE_CALL = re.compile(
    r"\.store\.(message_row|events|list_messages|list_inbound|inbound_row|cancel|withdraw"
    r"|insert|decrypt|blind_index|find_idempotent|records|state_counts|possible_duplicates"
    r"|sending_by_route)\b"
)


@pytest.mark.parametrize("path", VIEWS, ids=lambda p: p.name)
def test_message_views_do_not_touch_the_store(path: Path) -> None:
    found = [m.group(0) for m in _STORE_CALL.finditer(path.read_text())]
    assert not found, f"{path.name} reads or writes the store directly: {found}"


# No module of either web front end imports the store: tokens, the dashboard's live
# stream, webhook deliveries, held records all go through `gateway/usecases/`.
FRONT_END_MODULES = sorted(
    [*(GATEWAY / "api").glob("*.py"), *(GATEWAY / "admin").glob("*.py")],
    key=lambda p: (p.parent.name, p.name),
)


def store_imports(path: Path) -> set[str]:
    return {
        name
        for name in imported_modules(path)
        if name == "gateway.store" or name.startswith("gateway.store.")
    }


@pytest.mark.parametrize("path", FRONT_END_MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_front_ends_do_not_import_the_store(path: Path) -> None:
    found = store_imports(path)
    assert not found, f"{path.parent.name}/{path.name} imports the store: {sorted(found)}"


def test_the_store_check_sees_a_package_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from gateway.store import crypto\nimport gateway.store.store\n")
    assert store_imports(module) == {
        "gateway.store",
        "gateway.store.crypto",
        "gateway.store.store",
    }
