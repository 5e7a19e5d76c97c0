"""`serve` and `state status` as a deploy script runs them: bad input refused, failure in the exit code."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelport.cli import main


@pytest.mark.parametrize("command", ["serve", "ui"])
@pytest.mark.parametrize("port", ["65536", "99999", "-1"])
def test_a_port_outside_0_to_65535_is_refused_before_anything_starts(command: str, port: str) -> None:
    # 0 stays: it asks the system for a free port, as scripts and tests do.
    result = CliRunner().invoke(main, [command, "--port", port])
    assert result.exit_code == 2, result.output
    assert "--port" in result.output and "0<=x<=65535" in result.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_state_status_exits_1_when_a_store_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\ncounters = "redis://127.0.0.1:{_closed_port()}/0"\n')
    result = CliRunner().invoke(main, ["state", "status", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert "UNREACHABLE" in result.output


def test_state_status_exits_0_on_local_state_and_names_counters_db_for_workers(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    result = CliRunner().invoke(main, ["state", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "counters.db" in result.output and "each gateway process" not in result.output

