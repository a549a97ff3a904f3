"""The `orch` command line: help, version, exit codes and one-line errors (nothing connects)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import orchestrator.cli as cli
from orchestrator import __version__
from orchestrator.apply import HostReport
from orchestrator.errors import ConnectError, ExitCode, OrchError
from orchestrator.ops import Context
from orchestrator.plan import Change, Plan
from orchestrator.session import HostSession
from orchestrator.state import HostState

COMMANDS = ("setup", "plan", "status", "verify", "teardown", "trust", "lab")
LAB_COMMANDS = ("up", "down", "status", "fault", "heal")
RUNNERS = ("run_plan", "run_setup", "run_status", "run_teardown", "run_trust")

GOOD = """
[defaults]
parent = "enp0s9"

[ssh]
known_hosts = "known_hosts"
connect_timeout = 1

[[hosts]]
name = "host1"
address = "127.0.0.1"

[[hosts]]
name = "host2"
address = "127.0.0.2"

[[networks]]
name = "mac_net1"
subnet = "172.16.86.0/24"
"""

# two problems: a port out of range and an unknown macvlan mode
BROKEN = """
[defaults]
parent = "enp0s9"

[ssh]
known_hosts = "known_hosts"

[[hosts]]
name = "host1"
address = "127.0.0.1"
port = 70000

[[networks]]
name = "mac_net1"
subnet = "172.16.86.0/24"
mode = "bridged"
"""


@pytest.fixture(autouse=True)
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open an SSH session fails the test."""

    def refuse(self: HostSession) -> None:
        raise AssertionError(f"tried to connect to {self.host.address}")

    monkeypatch.setattr(HostSession, "connect", refuse)
    monkeypatch.delenv("ORCH_INVENTORY", raising=False)
    monkeypatch.delenv("ORCH_SUDO_PASSWORD", raising=False)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Replace every library entry point of the CLI by a recorder that must not be reached."""
    seen: list[str] = []

    def recorder(name: str) -> Callable[..., Any]:
        def record(*_args: object, **_kwargs: object) -> Any:
            seen.append(name)
            raise AssertionError(f"{name} was called")

        return record

    for name in RUNNERS:
        monkeypatch.setattr(cli, name, recorder(name))
    monkeypatch.setattr("orchestrator.verify.run_verify", recorder("run_verify"))
    yield seen


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.app, list(args), env=env)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def assert_no_traceback(result: Any) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- help and version ----------------------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"orch {__version__}\n"


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
    assert "--inventory" in result.stdout


def test_lab_help_lists_its_commands() -> None:
    result = invoke("lab", "--help")
    assert result.exit_code == 0
    for command in LAB_COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "lab"])
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "--host" in result.stdout


# --- inventory errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["plan", "setup", "status", "verify", "teardown", "trust"])
def test_missing_inventory(tmp_path: Path, calls: list[str], command: str) -> None:
    missing = tmp_path / "nope.toml"
    result = invoke("-i", str(missing), command)
    assert result.exit_code == int(ExitCode.INVENTORY) == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert str(missing) in lines[0] and "no such file" in lines[0]
    assert result.stdout == ""
    assert_no_traceback(result)
    assert calls == []


def test_missing_default_inventory(
    tmp_path: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("plan")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: hosts.toml: no such file")
    assert calls == []


def test_inventory_from_environment(tmp_path: Path, calls: list[str]) -> None:
    missing = tmp_path / "from-env.toml"
    result = invoke("status", env={"ORCH_INVENTORY": str(missing)})
    assert result.exit_code == 3
    assert str(missing) in result.stderr


@pytest.mark.parametrize("command", ["plan", "setup", "status", "verify", "teardown", "trust"])
def test_broken_inventory_reports_every_problem(
    tmp_path: Path, calls: list[str], command: str
) -> None:
    result = invoke("-i", str(write(tmp_path, BROKEN)), command)
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert all(line.startswith("error: hosts.toml: ") for line in lines)
    assert any("hosts[0].port" in line and "70000" in line for line in lines)
    assert any("networks[0].mode" in line and "bridged" in line for line in lines)
    assert result.stdout == ""
    assert_no_traceback(result)
    assert calls == []


def test_invalid_toml_is_one_line(tmp_path: Path, calls: list[str]) -> None:
    result = invoke("-i", str(write(tmp_path, "[[hosts]\nname = 1\n")), "plan")
    assert result.exit_code == 3
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: hosts.toml: not valid TOML")
    assert_no_traceback(result)


@pytest.mark.parametrize("command", ["plan", "setup", "status", "verify", "teardown", "trust"])
def test_unknown_host(tmp_path: Path, calls: list[str], command: str) -> None:
    inv = write(tmp_path, GOOD)
    result = invoke("-i", str(inv), command, "--host", "host1", "--host", "nosuch")
    assert result.exit_code == 3
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --host nosuch: no such host")
    assert line.endswith("hosts: host1, host2")
    assert_no_traceback(result)
    assert calls == []


def test_probe_tar_must_exist(tmp_path: Path, calls: list[str]) -> None:
    result = invoke("-i", str(write(tmp_path, GOOD)), "verify", "--probe-tar", "/nonexistent")
    assert result.exit_code == int(ExitCode.USAGE) == 2
    assert result.stderr == "error: --probe-tar /nonexistent: no such file\n"
    assert_no_traceback(result)
    assert calls == []


def test_unknown_option_is_a_usage_error() -> None:
    result = invoke("plan", "--frobnicate")
    assert result.exit_code == 2
    assert_no_traceback(result)


# --- wiring, with the library replaced at its entry points ---------------------------------------

CREATE = Change("host1", "create_network", "mac_net1", "absent; create on enp0s9")
NOOP = Change("host2", "noop", "mac_net1", "in sync, range 172.16.86.64/26")


def host_state(name: str) -> HostState:
    return HostState(name, "root", "root", {}, "1.45", "", {})


def test_plan_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Context] = []

    def fake_run_plan(ctx: Context, replace: bool) -> tuple[Plan, dict[str, Any]]:
        seen.append(ctx)
        assert replace is True
        ctx.session(ctx.hosts[0])  # no I/O; the CLI must close it when the command ends
        return Plan((CREATE, NOOP)), {"host1": host_state("host1")}

    monkeypatch.setattr(cli, "run_plan", fake_run_plan)
    result = invoke("-i", str(write(tmp_path, GOOD)), "plan", "--json", "--replace", "-H", "host1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["changes"] == [CREATE.as_dict()]
    assert data["unchanged"] == [NOOP.as_dict()]
    (ctx,) = seen
    assert ctx.selected == ["host1"]
    assert [h.name for h in ctx.hosts] == ["host1"]
    assert ctx.sessions == {}  # closed after use


def test_plan_table_goes_to_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        cli, "run_plan", lambda ctx, replace: (Plan((CREATE,)), {"host1": host_state("host1")})
    )
    result = invoke("-i", str(write(tmp_path, GOOD)), "plan")
    assert result.exit_code == 0
    assert "create" in result.stdout and "mac_net1" in result.stdout
    assert "\033[" not in result.stdout  # not a terminal: no color
    assert result.stderr == ""


def test_plan_exits_connect_when_no_host_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed = {"host1": ConnectError("host1: down"), "host2": ConnectError("host2: down")}
    error = Change("host1", "error", "-", "down")
    monkeypatch.setattr(cli, "run_plan", lambda ctx, replace: (Plan((error,)), observed))
    result = invoke("-i", str(write(tmp_path, GOOD)), "plan")
    assert result.exit_code == int(ExitCode.CONNECT) == 4
    assert "ERROR" in result.stdout


def test_setup_exits_1_when_a_host_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reports = [
        HostReport("host1", "changed", done=(CREATE,)),
        HostReport("host2", "failed", error="Docker refused: boom"),
    ]
    monkeypatch.setattr(cli, "run_setup", lambda ctx, replace: (Plan((CREATE, NOOP)), reports))
    result = invoke("-i", str(write(tmp_path, GOOD)), "setup", "--json")
    assert result.exit_code == int(ExitCode.FAILED) == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert [h["status"] for h in data["hosts"]] == ["changed", "failed"]


def test_library_error_is_one_line_with_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(ctx: Context, force: bool) -> Any:
        raise OrchError("host1: something specific went wrong")

    monkeypatch.setattr(cli, "run_teardown", boom)
    result = invoke("-i", str(write(tmp_path, GOOD)), "teardown")
    assert result.exit_code == 1
    assert result.stderr == "error: host1: something specific went wrong\n"
    assert_no_traceback(result)


def test_interrupt_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(ctx: Context) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_status", interrupted)
    result = invoke("-i", str(write(tmp_path, GOOD)), "status")
    assert result.exit_code == int(ExitCode.INTERRUPTED) == 130
    assert result.stderr.startswith("interrupted")
