"""`smsgw store migrate` and the `--postgresql` options without the [postgresql] extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import gateway.cluster
from gateway.cli import main
from tests.socket_rig import init_data_dir


def test_without_psycopg_the_cluster_commands_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = init_data_dir(tmp_path / "data")
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without it has
    monkeypatch.delitem(sys.modules, "gateway.cluster.commands", raising=False)
    monkeypatch.delattr(gateway.cluster, "commands", raising=False)  # imported by another test
    to = "postgresql://smsgw@127.0.0.1/smsgw"
    for argv in (
        ["store", "migrate", "--to", to],
        ["audit", "verify", "--postgresql", to],
        ["keys", "rotate", "--postgresql", to],
        ["keys", "retire", "--postgresql", to],
        ["keys", "status", "--postgresql", to],
    ):
        assert main([*argv, "--config", str(conf)]) == 2
        assert "pip install 'smsgw[postgresql]'" in capsys.readouterr().err


def test_the_cluster_options_without_postgresql_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = init_data_dir(tmp_path / "data")
    capsys.readouterr()
    to = "postgresql://smsgw@127.0.0.1/smsgw"
    for argv, flag in (
        (["keys", "rotate", "--node-id", "gw1"], "--node-id"),
        (["keys", "rotate", "--password-file", "/x"], "--password-file"),
        (["keys", "status", "--password-file", "/x"], "--password-file"),
        (["keys", "retire"], "keys retire"),
        (["audit", "verify", "--password-file", "/x"], "--password-file"),
        (["keys", "rotate", "--postgresql", to, "--background"], "--background"),
    ):
        assert main([*argv, "--config", str(conf)]) == 2
        assert f"configuration error: {flag}:" in capsys.readouterr().err
