"""The Debian package and the offline wheelhouse (packaging/).

Fast, offline checks run in the suite: `smsgw init --config` as the package's postinst
runs it, the wheelhouse builder on a local index of made-up packages (a pure sdist is
turned into a wheel; a native package with no arm64 wheel is named and refused), and the
.deb for amd64 and arm64 read back with dpkg-deb (control fields, conffile, unit, modes,
maintainer scripts). The install, upgrade and purge in a clean Debian root are in
tests/test_package_root.py (`make test-package`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from tests.test_cli import TOKEN_RE

REPO = Path(__file__).resolve().parent.parent


def _packaged_config(tmp_path: Path) -> Path:
    """The package's config skeleton, its data_dir moved into tmp_path."""
    text = (REPO / "packaging" / "smsgw.toml").read_text()
    etc = tmp_path / "etc"
    etc.mkdir()
    conf = etc / "smsgw.toml"
    conf.write_text(text.replace('"/var/lib/smsgw"', f'"{tmp_path / "state"}"'))
    return conf


def test_init_from_the_packaged_config_writes_no_second_config_and_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _packaged_config(tmp_path)
    assert main(["init", "--config", str(conf), "--no-token", "--self-signed-cert"]) == 0
    out = capsys.readouterr().out
    state = tmp_path / "state"
    assert not TOKEN_RE.search(out), "the postinst's output lands in apt's logs"
    assert not (state / "smsgw.toml").exists()
    assert (state / "master.key").stat().st_mode & 0o777 == 0o600
    assert (state / "tls" / "cert.pem").exists() and (state / "tls" / "key.pem").exists()
    conn = sqlite3.connect(state / "smsgw.db")
    assert conn.execute("SELECT count(*) FROM api_tokens").fetchone() == (0,)
    conn.close()
    assert f"smsgw token create --config {conf}" in out
    assert f"smsgw user add --config {conf}" in out


def test_init_takes_a_data_dir_or_a_config_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _packaged_config(tmp_path)
    with pytest.raises(SystemExit) as both:
        main(["init", "--config", str(conf), "--data-dir", str(tmp_path / "x")])
    assert both.value.code == 2
    with pytest.raises(SystemExit) as neither:
        main(["init"])
    assert neither.value.code == 2
    assert "--data-dir" in capsys.readouterr().err
