"""Observe a host, and carry a host's changes out over its session, all or nothing.

`observe_host` runs the one-round-trip observation script. `apply_host` runs the changes of one
host in order (NIC first, then networks) and keeps an undo list: when a step fails or the run is
interrupted, what this run already did on that host is undone, so no host is left half-made.
"""

from __future__ import annotations

import shlex
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import docker
from docker.types import IPAMConfig, IPAMPool

from orchestrator.errors import ConnectError, DockerError, OrchError, RemoteCommandError
from orchestrator.model import Inventory
from orchestrator.plan import Change
from orchestrator.session import CommandResult, HostSession
from orchestrator.state import HostState, labels_for, observe_script, parse_observation

Status = Literal["changed", "unchanged", "failed"]


@dataclass(frozen=True, slots=True)
class HostReport:
    """What happened on one host."""

    host: str
    status: Status
    done: tuple[Change, ...] = ()
    error: str = ""
    rolled_back: tuple[str, ...] = ()
    unchanged: tuple[Change, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "status": self.status,
            "done": [c.as_dict() for c in self.done],
            "error": self.error,
            "rolled_back": list(self.rolled_back),
        }


def observe_host(session: HostSession, inventory: Inventory) -> HostState:
    """Connect (if needed) and observe the host in one remote command.

    Raises:
        ConnectError: the host cannot be reached or the command failed to run.
    """
    script = observe_script([n.name for n in inventory.networks])
    result = session.run(script, log=False)
    session.log("observed (user, sudo, links, docker, networks) in one command")
    state = parse_observation(session.host.name, result.stdout)
    session.is_root = state.is_root
    return state


def explain_docker_error(exc: Exception, change: Change) -> str:
    """A Docker engine error in words a user understands."""
    text = str(getattr(exc, "explanation", None) or exc)
    spec = change.network
    if "Pool overlaps" in text:
        subnet = spec.subnet if spec else "the subnet"
        return (
            f"subnet {subnet} overlaps another network on this engine (Docker: Pool overlaps "
            "with other one on this address space); remove that network or choose another "
            "subnet"
        )
    if "already using parent interface" in text:
        return (
            f"another macvlan network already uses this parent NIC and this Docker version "
            f"allows only one per parent ({text})"
        )
    if "parent interface" in text and "not found" in text:
        return f"the parent NIC does not exist on this host ({text}); fix parent in hosts.toml"
    if "already exists" in text:
        return (
            f"a network called {change.target} already exists (made meanwhile by someone "
            "else?); run orch plan to see it"
        )
    return f"Docker refused: {text}"


def _check(result: CommandResult, session: HostSession) -> None:
    if result.ok:
        return
    err = result.stderr.strip()
    if "a password is required" in err or "may not run sudo" in err or "not in the sudoers" in err:
        raise RemoteCommandError(
            session.host.name,
            result.command,
            result.exited,
            f"user cannot run this through sudo without a password ({err.splitlines()[-1]}); "
            "grant passwordless sudo for ip, or set ORCH_SUDO_PASSWORD",
        )
    raise RemoteCommandError(session.host.name, result.command, result.exited, err)


def _ip_link(session: HostSession, nic: str, *words: str) -> None:
    cmd = f"ip link set dev {shlex.quote(nic)} " + " ".join(words)
    _check(session.run_privileged(f'env PATH="$PATH:/usr/sbin:/sbin" {cmd}'), session)


def create_network(client: docker.DockerClient, change: Change) -> str:
    """Create the network of a create/replace change; returns its ID."""
    spec = change.network
    assert spec is not None and change.ip_range is not None
    options = {"parent": change.parent, "macvlan_mode": spec.mode}
    pool = IPAMPool(
        subnet=str(spec.subnet),
        iprange=str(change.ip_range),
        gateway=str(spec.gateway),
        aux_addresses={k: str(v) for k, v in spec.reserved} or None,
    )
    resp = client.api.create_network(
        spec.name,
        driver=spec.driver,
        options=options,
        ipam=IPAMConfig(pool_configs=[pool]),
        labels=labels_for(change.ip_range, change.promisc_before),
        check_duplicate=True,
    )
    return str(resp.get("Id", ""))


def _remove_network(client: docker.DockerClient, name: str, force: bool) -> None:
    info: dict[str, Any] = client.api.inspect_network(name)
    if force:
        for cid in info.get("Containers") or {}:
            client.api.disconnect_container_from_network(cid, name, force=True)
    client.api.remove_network(info["Id"])


def apply_host(
    session: HostSession,
    state: HostState,
    changes: list[Change],
    cancel: threading.Event | None = None,
) -> HostReport:
    """Carry out one host's changes; on failure undo what this run did on the host.

    Conflicts and errors in `changes` mean nothing is done on this host at all.
    """
    host = session.host.name
    blocked = [c for c in changes if c.action in ("conflict", "error")]
    unchanged = tuple(c for c in changes if c.action == "noop")
    if blocked:
        reasons = "; ".join(f"{c.target}: {c.reason}" for c in blocked)
        return HostReport(
            host, "failed", error=f"{reasons} (nothing changed on {host})", unchanged=unchanged
        )
    todo = [c for c in changes if c.changes_host]
    if not todo:
        return HostReport(host, "unchanged", unchanged=unchanged)
    undo: list[tuple[str, Any]] = []
    done: list[Change] = []
    client = session.docker(state.docker_api) if state.docker_api else None
    try:
        for change in todo:
            if cancel is not None and cancel.is_set():
                raise OrchError("interrupted (Ctrl-C)")
            _apply_one(session, client, change, state, undo)
            done.append(change)
    except (OrchError, docker.errors.DockerException) as exc:
        message = str(exc)
        if isinstance(exc, docker.errors.DockerException):
            message = explain_docker_error(exc, change)
        message = message.removeprefix(f"{host}: ")
        rolled = _rollback(session, client, undo)
        return HostReport(
            host,
            "failed",
            done=(),
            error=f"{change.target}: {message}",
            rolled_back=tuple(rolled),
            unchanged=unchanged,
        )
    return HostReport(host, "changed", done=tuple(done), unchanged=unchanged)


def _apply_one(
    session: HostSession,
    client: docker.DockerClient | None,
    change: Change,
    state: HostState,
    undo: list[tuple[str, Any]],
) -> None:
    if change.action == "set_promisc":
        was = state.links[change.target]
        words = (["up"] if change.nic_up else []) + ["promisc", "on"]
        _ip_link(session, change.target, *words)
        session.log(f"{change.target}: {' '.join(words)}")
        undo.append(("link", (change.target, was.up, was.promisc)))
        return
    if change.action == "restore_promisc":
        _ip_link(session, change.target, "promisc", "off")
        session.log(f"{change.target}: promisc off")
        undo.append(("link", (change.target, True, True)))
        return
    if client is None:
        raise DockerError("the Docker engine does not answer")
    if change.action == "create_network":
        try:
            net_id = create_network(client, change)
        except docker.errors.APIError as exc:
            if "already exists" in str(exc) and _created_meanwhile(client, change):
                session.log(f"{change.target}: created meanwhile by another run; in sync")
                return
            raise
        session.log(f"{change.target}: created ({net_id[:12]}, range {change.ip_range})")
        undo.append(("network", net_id))
    elif change.action == "replace_network":
        _remove_network(client, change.target, force=True)
        net_id = create_network(client, change)
        session.log(f"{change.target}: replaced ({net_id[:12]}, range {change.ip_range})")
    elif change.action == "remove_network":
        _remove_network(client, change.target, force=change.force)
        session.log(f"{change.target}: removed")


def _created_meanwhile(client: docker.DockerClient, change: Change) -> bool:
    """True when a concurrent run created exactly the network we wanted."""
    from orchestrator.state import parse_network

    try:
        net = parse_network(client.api.inspect_network(change.target))
    except docker.errors.DockerException:
        return False
    spec = change.network
    return bool(
        spec is not None
        and net.managed
        and net.subnet == spec.subnet
        and net.ip_range == change.ip_range
        and net.gateway == spec.gateway
    )


def _rollback(
    session: HostSession, client: docker.DockerClient | None, undo: list[tuple[str, Any]]
) -> list[str]:
    rolled: list[str] = []
    for kind, what in reversed(undo):
        try:
            if kind == "network" and client is not None:
                client.api.remove_network(what)
                rolled.append(f"removed network {what[:12]}")
            elif kind == "link":
                nic, up, promisc = what
                _ip_link(session, nic, "promisc", "on" if promisc else "off")
                if not up:
                    _ip_link(session, nic, "down")
                rolled.append(f"{nic} back to promisc {'on' if promisc else 'off'}")
        except (OrchError, docker.errors.DockerException, ConnectError) as exc:
            rolled.append(f"could not undo {kind} {what}: {exc}; rerun after healing")
    return rolled
