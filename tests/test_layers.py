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
    r"|insert|decrypt|blind_index|find_idempotent|records|sending_counts|possible_duplicates"
    r"|sending_by_route)\b"
)


@pytest.mark.parametrize("path", VIEWS, ids=lambda p: p.name)
def test_message_views_do_not_touch_the_store(path: Path) -> None:
    found = [m.group(0) for m in _STORE_CALL.finditer(path.read_text())]
    assert not found, f"{path.name} reads or writes the store directly: {found}"


# No module of either web front end imports the store or reads `gw.store`: tokens, the
# dashboard's live stream, webhook deliveries, held records and the audit trail go
# through `gateway/usecases/`. An import only for annotations (`if TYPE_CHECKING:`) is
# allowed: it runs nothing.
FRONT_END_MODULES = sorted(
    [*(GATEWAY / "api").glob("*.py"), *(GATEWAY / "admin").glob("*.py")],
    key=lambda p: (p.parent.name, p.name),
)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of the statements inside `if TYPE_CHECKING:` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in {
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        }:
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def store_imports(path: Path) -> set[str]:
    """The store modules `path` imports at run time (not only for annotations)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = _type_checking_only(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "gateway.store" or n.startswith("gateway.store.")}


def store_reads(path: Path) -> list[str]:
    """Every `<something>.store` the module's code reaches for (`gw.store.tokens()`)."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "store"
    ]


def _module_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", FRONT_END_MODULES, ids=_module_id)
def test_front_ends_do_not_import_the_store(path: Path) -> None:
    found = store_imports(path)
    assert not found, f"{_module_id(path)} imports the store: {sorted(found)}"


@pytest.mark.parametrize("path", FRONT_END_MODULES, ids=_module_id)
def test_front_ends_do_not_reach_for_the_store(path: Path) -> None:
    found = store_reads(path)
    assert not found, f"{_module_id(path)} uses the store directly: {found}"


def test_the_store_checks_see_imports_and_reads(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from gateway.store import crypto\n"
        "if TYPE_CHECKING:\n"
        "    from gateway.store.records import Sealed\n"
        "def f(gw):\n"
        "    import gateway.store.store\n"
        "    return gw.store.tokens()\n"
    )
    assert store_imports(module) == {
        "gateway.store",
        "gateway.store.crypto",
        "gateway.store.store",
    }
    assert store_reads(module) == ["line 7: gw.store"]
