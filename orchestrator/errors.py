"""The one exception root of orch, its subclasses, and the named exit codes.

Library code raises these; only `cli.py` turns them into exit codes and one-line messages.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (2 is left to Typer for usage errors)."""

    OK = 0
    FAILED = 1  # a host, a change or a ping failed
    USAGE = 2
    INVENTORY = 3  # hosts.toml is missing or invalid
    CONNECT = 4  # no host could be reached at all
    LAB = 5  # the local lab cannot be built or needs something
    INTERRUPTED = 130


class OrchError(Exception):
    """Root of every error orch reports to the user as one clear message."""

    exit_code: ExitCode = ExitCode.FAILED


class InventoryError(OrchError):
    """hosts.toml is unreadable or invalid; carries every problem found, one per line."""

    exit_code = ExitCode.INVENTORY

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ConnectError(OrchError):
    """A host cannot be reached or refuses us (network, auth, host key)."""

    exit_code = ExitCode.CONNECT


class HostKeyError(ConnectError):
    """A host key is unknown or changed; the message says how to trust it."""


class RemoteCommandError(OrchError):
    """A remote command failed; carries the host, the command and its output."""

    def __init__(self, host: str, command: str, exited: int, stderr: str) -> None:
        self.host = host
        self.command = command
        self.exited = exited
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {exited}"
        super().__init__(f"{host}: `{command}` failed: {detail}")


class DockerError(OrchError):
    """The Docker engine of a host refused a request; the message is in user words."""


class PlanError(OrchError):
    """The plan cannot be made (for example the subnet cannot hold the hosts)."""


class LabError(OrchError):
    """The local namespace lab cannot do what was asked."""

    exit_code = ExitCode.LAB
