"""The shipped unit file, checked by systemd's own tools on the real file, byte for byte."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "riffradio.service"
ENV_EXAMPLE = UNIT.with_name("riffradio.env.example")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="apt-get install systemd")


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def install_root(root: Path, unit_text: str) -> None:
    """A filesystem root like a host after docs/operations.md: systemd's units, the venv, the unit.

    `systemd-analyze verify --root` resolves every path in the unit inside ``root``, so the
    executables the unit names are created there (empty scripts) and the unit is installed as is.
    """
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for key, values in unit_settings(unit_text).items():
        if key.startswith("Exec"):
            for value in values:
                exe = root / value.lstrip("-@:+!").split()[0].lstrip("/")
                exe.parent.mkdir(parents=True, exist_ok=True)
                exe.write_text("#!/bin/sh\n")
                exe.chmod(0o755)
    target = root / "etc/systemd/system/riffradio.service"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(unit_text)


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "riffradio.service"],
        capture_output=True, text=True, timeout=60,
    )


def test_systemd_analyze_verify_passes_on_the_shipped_unit(tmp_path: Path) -> None:
    install_root(tmp_path, UNIT.read_text())
    result = verify(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"systemd-analyze warned:\n{result.stderr}"


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit whose program is missing is rejected."""
    text = UNIT.read_text().replace("/opt/riffradio/venv/bin/riffradio", "/opt/riffradio/venv/bin/nowhere")
    install_root(tmp_path, UNIT.read_text())
    (tmp_path / "etc/systemd/system/riffradio.service").write_text(text)
    result = verify(tmp_path)
    assert result.returncode != 0
    assert "/opt/riffradio/venv/bin/nowhere" in result.stderr


def test_unit_has_the_service_contract() -> None:
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["always"]
    assert float(s["WatchdogSec"][0]) >= 10  # longer than a clip: only a stalled clock trips it
    assert s["EnvironmentFile"][0].startswith("/etc/riffradio/")
    assert s["User"] == ["riffradio"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert int(s["LimitNOFILE"][0]) >= 16384  # idle connections must not exhaust 1024 descriptors
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
        "DevicePolicy": "closed",
    }.items():
        assert s[key] == [value], key
    writable = " ".join(s["ReadWritePaths"]).split()
    assert "/var/lib/riffradio" in writable and "/var/cache/riffradio" in writable
    assert any(v.startswith("HF_HOME=/var/cache/riffradio") for v in " ".join(s["Environment"]).split())
    assert {"char-nvidia-frontend rw", "char-nvidia-uvm rw"} <= set(s["DeviceAllow"])


def test_security_exposure_is_low(tmp_path: Path) -> None:
    install_root(tmp_path, UNIT.read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={tmp_path}", "--no-pager", "riffradio.service"],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for riffradio\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5  # docs/operations.md reports the measured figure


def test_env_example_names_the_secrets_the_playlists_use() -> None:
    names = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z_]+=", line)}
    assert {"ICECAST_PASSWORD", "STREAM_KEY"} <= names
