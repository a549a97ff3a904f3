"""One SSH connection per host, carrying both shell commands and Docker API traffic.

`HostSession` is the only place where orch touches Fabric, paramiko and the docker SDK's transport:
- host keys are always verified (system known_hosts + orch's own file); a new key is accepted only
  when the user asked for trust-on-first-use, and then recorded in orch's file only;
- the Docker client rides on the same paramiko transport: each API connection is a channel that
  runs `docker system dial-stdio` on the host, so Docker traffic gets the same host-key checks,
  timeouts and ProxyJump as the shell commands, and costs no second login.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
from fabric import Config, Connection
from invoke.exceptions import AuthFailure, CommandTimedOut
from paramiko.hostkeys import InvalidHostKey

from orchestrator.errors import ConnectError, HostKeyError
from orchestrator.model import Host, SSHSettings

if TYPE_CHECKING:
    import docker


Logger = Callable[[str], None]

_known_hosts_lock = threading.Lock()

# paramiko logs a failed handshake with a traceback from its transport thread, and with no
# handler configured Python prints it on stderr; orch reports the failure itself, in words.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE_S = 5


def _bound_waits(transport: paramiko.Transport, timeout: float) -> None:
    """Make every wait on an open connection end: a keepalive every few seconds; opening a
    channel (a command, a Docker API connection) gives up after `timeout` (paramiko's default
    is an hour); and on Linux the kernel drops the connection when the host stops
    acknowledging (gone without a word: powered off, cable pulled), instead of TCP
    retransmitting for a quarter of an hour. Commands themselves have `command_timeout`."""
    transport.set_keepalive(KEEPALIVE_S)
    transport.channel_timeout = timeout
    sock = transport.sock
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None and isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, int(1000 * (timeout + 2 * KEEPALIVE_S)))


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a host key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    """The name under which known_hosts stores `address:port`."""
    return address if port == 22 else f"[{address}]:{port}"


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host, naming its key and how to trust it."""

    def __init__(self, host: Host, known_hosts: Path) -> None:
        self.host = host
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyError(
            f"{self.host.name}: unknown SSH host key for {hostname} ({key.get_name()} "
            f"{fingerprint(key)}); if that is the host's key, run `orch trust --host "
            f"{self.host.name}` (records it in {self.known_hosts}) or pass --trust-new-hosts"
        )


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown host and append its key to orch's own known_hosts file."""

    def __init__(self, host: Host, known_hosts: Path, log: Logger) -> None:
        self.host = host
        self.known_hosts = known_hosts
        self.log = log

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(self.known_hosts, "a", encoding="utf-8") as fh:
                fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.log(
            f"{self.host.name}: trusted new host key {key.get_name()} {fingerprint(key)} "
            f"(recorded in {self.known_hosts})"
        )


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a remote command gave back."""

    command: str
    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exited == 0


class HostSession:
    """An SSH session to one host: shell commands, privileged commands and a Docker client.

    Not thread-safe: use one session per host and one thread per session.
    """

    def __init__(
        self,
        host: Host,
        ssh: SSHSettings,
        *,
        trust_new_hosts: bool = False,
        sudo_password: str | None = None,
        log: Logger | None = None,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.ssh = ssh
        self.trust_new_hosts = trust_new_hosts
        self._sudo_password = sudo_password
        self._log = log or (lambda _m: None)
        self._verbose = verbose
        self._cxn: Connection | None = None
        self._docker: docker.DockerClient | None = None
        self.is_root: bool | None = None
        self.ip_path = "/usr/sbin/ip"  # set by the observation

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Open the SSH connection, verifying the host key.

        Raises:
            HostKeyError: the key is unknown (and TOFU was not asked for) or has changed.
            ConnectError: the host is unreachable, refuses us, or times out.
        """
        host = self.host
        connect_kwargs: dict[str, Any] = {
            "banner_timeout": self.ssh.connect_timeout,
            "auth_timeout": self.ssh.connect_timeout,
        }
        if host.identity_file is not None:
            connect_kwargs["key_filename"] = [str(host.identity_file)]
        config = Config(overrides={"sudo": {"password": self._sudo_password}})
        cxn = Connection(
            host.address,
            user=host.user,
            port=host.port,
            connect_timeout=self.ssh.connect_timeout,
            connect_kwargs=connect_kwargs,  # a fresh dict per connection (Fabric mutates it)
            config=config,
        )
        # Every hop (a ProxyJump gateway too) gets the same host-key policy and timeouts:
        # Fabric's own default would accept any key.
        hop: object = cxn
        while isinstance(hop, Connection):
            self._guard(hop)
            hop = hop.gateway
        target = f"{cxn.user}@{cxn.host}:{cxn.port}"
        try:
            self._open(cxn, target)
        except BaseException:
            # Fabric only tracks the transport once connect() returned: close the client too,
            # or a refused connection leaves its transport thread and socket behind.
            _close_all(cxn)
            raise
        self._cxn = cxn
        transport = cxn.transport
        if transport is not None:
            _bound_waits(transport, self.ssh.connect_timeout)

    def _guard(self, cxn: Connection) -> None:
        """Strict host keys on `cxn`: known_hosts files, then refuse (or TOFU when asked)."""
        host = self.host
        client = cxn.client
        try:
            client.load_system_host_keys()
            if self.ssh.known_hosts.exists():
                client.load_host_keys(str(self.ssh.known_hosts))
        except (InvalidHostKey, OSError, paramiko.SSHException) as exc:
            raise HostKeyError(
                f"{host.name}: cannot read known_hosts ({exc}); fix or remove the bad line "
                "(paramiko does not support @cert-authority or @revoked markers)"
            ) from None
        policy: paramiko.MissingHostKeyPolicy = (
            _TrustOnFirstUse(host, self.ssh.known_hosts, self._log)
            if self.trust_new_hosts
            else _RejectUnknown(host, self.ssh.known_hosts)
        )
        client.set_missing_host_key_policy(policy)
        if cxn.connect_timeout is None:
            cxn.connect_timeout = self.ssh.connect_timeout

    def _open(self, cxn: Connection, target: str) -> None:
        host = self.host
        try:
            cxn.open()
        except HostKeyError:
            raise
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"{host.name}: SSH host key of {exc.hostname} CHANGED: known "
                f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, offered "
                f"{exc.key.get_name()} {fingerprint(exc.key)}; possible impostor, nothing was "
                f"done. If the host was reinstalled, remove its old key from {self.ssh.known_hosts}"
                " or ~/.ssh/known_hosts, then run `orch trust`"
            ) from None
        except paramiko.AuthenticationException as exc:
            raise ConnectError(
                f"{host.name}: SSH authentication failed for {target} ({exc}); check user and "
                "identity_file in hosts.toml, or your ssh agent"
            ) from None
        except TimeoutError:
            raise ConnectError(
                f"{host.name}: no answer from {target} within {self.ssh.connect_timeout:g} s"
            ) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
            if "banner" in reason or reason == "No existing session":
                # paramiko's words for: the TCP connection was accepted, then nothing came.
                raise ConnectError(
                    f"{host.name}: {target} accepted the connection but sshd did not answer "
                    f"within {self.ssh.connect_timeout:g} s (no SSH banner; sshd hung or "
                    "overloaded?)"
                ) from None
            raise ConnectError(f"{host.name}: cannot connect to {target}: {reason}") from None

    @property
    def connection(self) -> Connection:
        if self._cxn is None:
            self.connect()
        assert self._cxn is not None
        return self._cxn

    @property
    def is_open(self) -> bool:
        """True while the SSH connection is up (no I/O: it does not connect)."""
        return self._cxn is not None and bool(self._cxn.is_connected)

    def close(self) -> None:
        """Close the Docker channels and the SSH connection."""
        if self._docker is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                self._docker.close()
            self._docker = None
        if self._cxn is not None:
            _close_all(self._cxn)
            self._cxn = None

    def __enter__(self) -> HostSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def _broken(self, exc: BaseException) -> ConnectError:
        reason = str(exc) or type(exc).__name__
        return ConnectError(f"{self.host.name}: the SSH connection to the host broke ({reason})")

    def run(self, command: str, *, timeout: float | None = None, log: bool = True) -> CommandResult:
        """Run a shell command; never raises for a non-zero exit.

        Raises:
            ConnectError: the connection broke or the command timed out.
        """
        if log and self._verbose:
            self._log(f"{self.host.name} $ {command}")
        try:
            res = self.connection.run(
                command,
                hide=True,
                warn=True,
                in_stream=False,
                timeout=timeout or self.ssh.command_timeout,
            )
        except CommandTimedOut:
            raise ConnectError(
                f"{self.host.name}: `{_short(command)}` did not finish within "
                f"{timeout or self.ssh.command_timeout:g} s"
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._broken(exc) from None
        return CommandResult(command, res.exited, res.stdout, res.stderr)

    def run_privileged(self, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run `command` as root: directly when the SSH user is root, else through sudo.

        Without a sudo password, `sudo -n` fails fast instead of prompting.
        """
        if self.is_root:
            return self.run(command, timeout=timeout)
        if self._sudo_password is None:
            return self.run(f"sudo -n {command}", timeout=timeout)
        if self._verbose:
            self._log(f"{self.host.name} $ sudo {command}")
        try:
            res = self.connection.sudo(
                command,
                hide=True,
                warn=True,
                in_stream=False,
                timeout=timeout or self.ssh.command_timeout,
            )
        except CommandTimedOut:
            raise ConnectError(f"{self.host.name}: `sudo {_short(command)}` timed out") from None
        except Exception as exc:  # invoke's AuthFailure and connection errors
            raise ConnectError(
                f"{self.host.name}: sudo failed for `{_short(command)}`: "
                f"{type(exc).__name__} (check the sudo password)"
            ) from None
        return CommandResult(f"sudo {command}", res.exited, res.stdout, res.stderr)

    def sudo_refusal(self) -> str:
        """With a sudo password: '' when sudo accepts it for the SSH user, else why not.

        Raises:
            ConnectError: the connection broke or sudo did not answer in time.
        """
        if self.is_root or self._sudo_password is None:
            return ""
        user = self.connection.user
        try:
            res = self.connection.sudo(
                "true", hide=True, warn=True, in_stream=False, timeout=self.ssh.command_timeout
            )
        except AuthFailure:
            return (
                f"sudo did not accept the password given for user {user} (ORCH_SUDO_PASSWORD "
                "or --ask-sudo-password); nothing was done"
            )
        except CommandTimedOut:
            raise ConnectError(f"{self.host.name}: `sudo true` timed out") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._broken(exc) from None
        if res.exited == 0:
            return ""
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        detail = lines[-1].replace("[sudo] password: ", "") if lines else f"exit {res.exited}"
        return f"user {user} cannot run commands through sudo ({detail})"

    # ------------------------------------------------------------------ docker
    def docker(self, api_version: str) -> docker.DockerClient:
        """A Docker client over this session's SSH transport, pinned to `api_version`.

        Pinning the version (known from the observation) skips the negotiation round trip;
        "auto" asks the engine with the first request instead. The docker SDK is imported
        here, on first use: commands that need no Docker API call never pay for it.
        """
        if self._docker is None:
            from orchestrator.dockerlink import docker_client

            self._docker = docker_client(self.connection, api_version, self.ssh.command_timeout)
        return self._docker

    def log(self, message: str) -> None:
        """Log a step (only with -v)."""
        if self._verbose:
            self._log(f"{self.host.name}: {message}")


def _short(command: str, limit: int = 80) -> str:
    line = command.strip().splitlines()[0] if command.strip() else command
    return line if len(line) <= limit else line[: limit - 3] + "..."


def sudo_password_from_env() -> str | None:
    """The sudo password from $ORCH_SUDO_PASSWORD, if set (never from a file). It is taken out
    of the environment, so that no child process (a ProxyCommand, say) inherits it."""
    return os.environ.pop("ORCH_SUDO_PASSWORD", None) or None


def _close_all(cxn: Connection) -> None:
    """Close a connection, its paramiko client and every gateway hop behind it."""
    hop: Any = cxn
    while hop is not None and not isinstance(hop, str):  # a str gateway is a ProxyCommand
        with contextlib.suppress(Exception):
            hop.close()
        with contextlib.suppress(Exception):
            hop.client.close()
        hop = getattr(hop, "gateway", None)
