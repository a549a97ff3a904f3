"""Observe a host, and carry a host's changes out over its session, all or nothing.

`observe_host` runs the one-round-trip observation script. `apply_host` runs the changes of one
host in plan order (networks, then the NIC) and keeps an undo list: when a step fails or the run is
interrupted, what this run already did on that host is undone, so no host is left half-made.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import paramiko

from orchestrator._lazy import lazy_module
from orchestrator.errors import ConnectError, DockerError, OrchError, RemoteCommandError
from orchestrator.model import LABEL_MANAGED, Inventory
from orchestrator.plan import Change
from orchestrator.session import CommandResult, HostSession
from orchestrator.state import (
    MARK,
    HostState,
    labels_for,
    observe_script,
    parse_observation,
    promisc_nic,
)

if TYPE_CHECKING:
    import docker
else:
    docker = lazy_module("docker")  # the SDK costs ~0.2 s to import; an in-sync run needs none

Status = Literal["changed", "unchanged", "failed"]


@dataclass(frozen=True, slots=True)
class HostReport:
    """What happened on one host."""

    host: str
    status: Status
    done: tuple[Change, ...] = ()
    error: str = ""
    rolled_back: tuple[str, ...] = ()

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
    if f"{MARK}end" not in result.stdout:
        raise ConnectError(
            f"{session.host.name}: observation cut short (exit {result.exited}): "
            f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    state = parse_observation(session.host.name, result.stdout)
    session.is_root = state.is_root
    session.ip_path = state.ip_path
    return state


def explain_docker_error(exc: Exception, change: Change) -> str:
    """A Docker engine error in words a user understands."""
    text = str(getattr(exc, "explanation", None) or exc)
    spec = change.network
    if "Pool overlaps" in text or ("allocate gateway" in text and "already in use" in text):
        # Docker says "Pool overlaps ..." or, when another network already holds the
        # gateway address, "failed to allocate gateway (...): Address already in use".
        subnet = spec.subnet if spec else "the subnet"
        return (
            f"subnet {subnet} overlaps another network on this engine (Docker: {text}); "
            "remove that network or choose another subnet"
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
    # The absolute path found by the observation: sudo then checks (and runs) `ip` itself, so
    # a sudoers rule for ip alone works, and the user's own PATH never reaches root.
    ip = shlex.quote(session.ip_path)
    _check(
        session.run_privileged(f"{ip} link set dev {shlex.quote(nic)} {' '.join(words)}"), session
    )


def create_network(client: docker.DockerClient, change: Change) -> str:
    """Create the network of a create/replace change; returns its ID."""
    spec = change.network
    assert spec is not None and change.ip_range is not None
    options = {"parent": change.parent, "macvlan_mode": spec.mode}
    from docker.types import IPAMConfig, IPAMPool

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
    if blocked:
        reasons = "; ".join(f"{c.target}: {c.reason}" for c in blocked)
        return HostReport(host, "failed", error=f"{reasons} (nothing changed on {host})")
    todo = [c for c in changes if c.changes_host]
    if not todo:
        return HostReport(host, "unchanged")
    undo: list[tuple[str, Any]] = []
    owners: list[Change] = []  # the change each undo entry belongs to
    done: list[Change] = []
    change = todo[0]
    try:
        client = session.docker(state.docker_api) if state.docker_api else None
    except Exception as exc:  # the SSH connection broke since the observation
        message = _failure_text(exc, change, host)
        return HostReport(host, "failed", error=f"{change.target}: {message}")
    try:
        for change in todo:
            if cancel is not None and cancel.is_set():
                raise OrchError("interrupted (Ctrl-C)")
            before = len(undo)
            did = _apply_one(session, client, change, state, undo)
            owners.extend([change] * (len(undo) - before))
            if did:
                done.append(change)
    except Exception as exc:  # every failure, also a broken connection, rolls back
        message = _failure_text(exc, change, host)
        left: list[int] = []
        rolled = _rollback(session, client, undo, left)
        for line in rolled:
            session.log(f"undo: {line}")
        # What could not be undone is still in effect on the host: say so in `done`.
        kept = tuple(dict.fromkeys(owners[i] for i in sorted(left)))
        return HostReport(
            host,
            "failed",
            done=kept,
            error=f"{change.target}: {message}",
            rolled_back=tuple(rolled),
        )
    return HostReport(host, "changed" if done else "unchanged", done=tuple(done))


def _failure_text(exc: Exception, change: Change, host: str) -> str:
    """Why a step failed, in user words (without the host name in front)."""
    if isinstance(exc, docker.errors.DockerException):
        return explain_docker_error(exc, change)
    if isinstance(exc, OrchError):
        return str(exc).removeprefix(f"{host}: ")
    if isinstance(exc, OSError | EOFError | paramiko.SSHException):
        detail = str(exc) or type(exc).__name__
        return f"the SSH connection to the host broke ({detail})"
    return f"unexpected {type(exc).__name__}: {exc}"


def _apply_one(
    session: HostSession,
    client: docker.DockerClient | None,
    change: Change,
    state: HostState,
    undo: list[tuple[str, Any]],
) -> bool:
    """Carry out one change, recording how to undo it; False when it turned out to be done
    already (by a concurrent run)."""
    if change.action == "set_promisc":
        was = state.links[change.target]
        words = (["up"] if change.nic_up else []) + ["promisc", "on"]
        _ip_link(session, change.target, *words)
        session.log(f"{change.target}: {' '.join(words)}")
        undo.append(("link", (change.target, was.up, was.promisc)))
        return True
    if change.action == "restore_promisc":
        _ip_link(session, change.target, "promisc", "off")
        session.log(f"{change.target}: promisc off")
        undo.append(("link", (change.target, True, True)))
        return True
    if client is None:
        raise DockerError("the Docker engine does not answer")
    if change.action == "create_network":
        try:
            net_id = create_network(client, change)
        except docker.errors.APIError as exc:
            # A concurrent run may have won the race: Docker then says "already exists", or,
            # when both passed its name check at once, that the pool or parent is taken.
            if _RACE_ERRORS.search(str(exc)) and _created_meanwhile(client, change):
                session.log(f"{change.target}: created meanwhile by another run; in sync")
                return False
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
    return True


_RACE_ERRORS = re.compile(
    r"already exists|Pool overlaps|already using parent interface|Address already in use"
)


def _created_meanwhile(client: docker.DockerClient, change: Change) -> bool:
    """True when a concurrent run created exactly the network we wanted."""
    from orchestrator.state import parse_network

    # The winner may still be finishing its create (the address pool is taken a moment before
    # the network shows up by name): look a few times before calling it a real failure.
    for attempt in range(3):
        try:
            net = parse_network(client.api.inspect_network(change.target))
            break
        except docker.errors.NotFound:
            if attempt == 2:
                return False
            time.sleep(0.2)
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


def _orch_network_on(client: docker.DockerClient, nic: str, exclude: set[str]) -> bool:
    """True when an orch network, other than the IDs in `exclude`, has `nic` as its parent's
    base NIC."""
    nets: list[dict[str, Any]] = client.api.networks(filters={"label": f"{LABEL_MANAGED}=true"})
    return any(
        promisc_nic(str((n.get("Options") or {}).get("parent", ""))) == nic
        and n.get("Id") not in exclude
        for n in nets
    )


def _rollback(
    session: HostSession,
    client: docker.DockerClient | None,
    undo: list[tuple[str, Any]],
    left: list[int] | None = None,
) -> list[str]:
    """Undo `undo` in reverse order; returns one line per entry. Indexes of entries that could
    not be undone (the host stopped answering, say) are appended to `left`."""
    rolled: list[str] = []
    host = session.host.name
    broken = ""  # once the connection is gone, do not wait out a timeout per entry
    ours = {str(what) for kind, what in undo if kind == "network"}  # removed by this rollback
    for index in reversed(range(len(undo))):
        kind, what = undo[index]
        try:
            if broken:
                raise ConnectError(broken)
            if kind == "network":
                if client is None:
                    raise DockerError("no Docker client")
                client.api.remove_network(what)
                rolled.append(f"removed network {what[:12]}")
            elif kind == "link":
                nic, up, promisc = what
                if not promisc and client is not None and _orch_network_on(client, nic, ours):
                    rolled.append(
                        f"kept {nic} promisc on: an orch network that another run made "
                        "meanwhile uses it"
                    )
                    continue
                _ip_link(
                    session, nic, "promisc", "on" if promisc else "off", *([] if up else ["down"])
                )
                rolled.append(f"{nic} back to promisc {'on' if promisc else 'off'}")
        except Exception as exc:  # best effort: report, go on with the rest
            if left is not None:
                left.append(index)
            reason = str(exc).removeprefix(f"{host}: ") or type(exc).__name__
            if isinstance(exc, ConnectError | OSError | EOFError | paramiko.SSHException):
                broken = reason
            if kind == "link":
                nic, up, promisc = what
                word = "on" if promisc else "off"
                rolled.append(
                    f"could not put {nic} back to promisc {word} ({reason}); it stays as this "
                    f"run left it: run `orch setup` again once the host answers, or `ip link "
                    f"set {nic} promisc {word}` there"
                )
            else:
                rolled.append(
                    f"could not remove network {str(what)[:12]} ({reason}); run `orch "
                    "teardown` or `orch setup` again once the host answers"
                )
    return rolled
