"""The commands as library calls: observe all hosts in parallel, plan, apply, report.

Each function returns values (Plan, reports, rows) for `render.py`; none prints or exits.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.apply import HostReport, apply_host, observe_host
from orchestrator.errors import ConnectError, OrchError
from orchestrator.model import Host, Inventory
from orchestrator.parallel import for_each
from orchestrator.plan import Plan, network_state, plan_setup, plan_teardown
from orchestrator.session import HostSession, fingerprint
from orchestrator.state import HostState, promisc_nic

Logger = Callable[[str], None]


@dataclass
class Context:
    """What every command needs: the inventory, the host selection and session settings."""

    inventory: Inventory
    selected: list[str] = field(default_factory=list)
    trust_new_hosts: bool = False
    sudo_password: str | None = field(default=None, repr=False)
    log: Logger = lambda _m: None
    verbose: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    sessions: dict[str, HostSession] = field(default_factory=dict)

    @property
    def hosts(self) -> list[Host]:
        """The selected hosts (all when none selected)."""
        if not self.selected:
            return list(self.inventory.hosts)
        return [h for h in self.inventory.hosts if h.name in self.selected]

    def session(self, host: Host) -> HostSession:
        if host.name not in self.sessions:
            self.sessions[host.name] = HostSession(
                host,
                self.inventory.ssh,
                trust_new_hosts=self.trust_new_hosts,
                sudo_password=self.sudo_password,
                log=self.log,
                verbose=self.verbose,
            )
        return self.sessions[host.name]

    def close(self) -> None:
        """Close every session, in parallel (a dead host must not delay the others)."""
        sessions = list(self.sessions.values())
        self.sessions.clear()
        for_each(sessions, lambda s: s.close(), name=lambda s: s.host.name)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def observe_all(ctx: Context, hosts: list[Host]) -> dict[str, HostState | OrchError]:
    """Connect to and observe `hosts`, all at once."""
    results = for_each(
        hosts,
        lambda h: observe_host(ctx.session(h), ctx.inventory),
        cancel=ctx.cancel,
        name=lambda h: h.name,
    )
    return {h.name: r for h, r in results.items()}


def _check_sudo(ctx: Context, observed: dict[str, HostState | OrchError]) -> None:
    """With a sudo password: try it where passwordless sudo is missing (in place).

    A host where sudo takes the password counts as able to sudo; one where it does not gets
    that reason as its error, so that nothing is attempted there.
    """
    if ctx.sudo_password is None:
        return
    todo = []
    for host in ctx.hosts:
        state = observed.get(host.name)
        if isinstance(state, HostState) and state.sudo == "no":
            todo.append(host)

    def one(host: Host) -> str:
        return ctx.session(host).sudo_refusal()

    for host, result in for_each(todo, one, cancel=ctx.cancel, name=lambda h: h.name).items():
        state = observed[host.name]
        assert isinstance(state, HostState)
        if isinstance(result, OrchError):
            observed[host.name] = result
        elif result:
            observed[host.name] = OrchError(f"{host.name}: {result}")
        else:
            observed[host.name] = dataclasses.replace(state, sudo="yes")


def _require_reachable(ctx: Context, observed: dict[str, HostState | OrchError]) -> None:
    """Stop (exit code CONNECT) when not one selected host could be reached."""
    errors = [observed.get(h.name) for h in ctx.hosts]
    if errors and all(isinstance(e, ConnectError) for e in errors):
        lines = "\n".join(str(e) for e in errors)
        raise ConnectError(f"no host could be reached; nothing was done:\n{lines}")


def run_plan(ctx: Context, replace: bool = False) -> tuple[Plan, dict[str, HostState | OrchError]]:
    """Observe every host (all count for range allocation) and plan the selected ones."""
    observed = observe_all(ctx, list(ctx.inventory.hosts))
    _check_sudo(ctx, observed)
    return plan_setup(ctx.inventory, observed, ctx.selected or None, replace=replace), observed


def run_setup(ctx: Context, replace: bool = False) -> tuple[Plan, list[HostReport]]:
    """Plan, then apply every selected host's changes in parallel.

    Raises:
        ConnectError: not one selected host could be reached (nothing was done).
    """
    plan, observed = run_plan(ctx, replace)
    _require_reachable(ctx, observed)
    return plan, _apply(ctx, plan, observed)


def run_teardown(ctx: Context, force: bool = False) -> tuple[Plan, list[HostReport]]:
    """Remove orch's networks and restore promisc on the selected hosts.

    Raises:
        ConnectError: not one selected host could be reached (nothing was done).
    """
    observed = observe_all(ctx, ctx.hosts)
    _check_sudo(ctx, observed)
    _require_reachable(ctx, observed)
    plan = plan_teardown(ctx.inventory, observed, ctx.selected or None, force=force)
    return plan, _apply(ctx, plan, observed)


def _apply(
    ctx: Context, plan: Plan, observed: dict[str, HostState | OrchError]
) -> list[HostReport]:
    by_host = plan.by_host()

    def one(host: Host) -> HostReport:
        state = observed.get(host.name)
        changes = by_host.get(host.name, [])
        if not isinstance(state, HostState):
            reason = changes[0].reason if changes else str(state)
            return HostReport(host.name, "failed", error=reason)
        return apply_host(ctx.session(host), state, changes, ctx.cancel)

    results = for_each(ctx.hosts, one, cancel=ctx.cancel, name=lambda h: h.name)
    return [
        r if isinstance(r, HostReport) else HostReport(h.name, "failed", error=str(r))
        for h, r in results.items()
    ]


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    """One network on one host, for `orch status`."""

    name: str
    state: str  # absent | in sync | drift | not orch's
    detail: str
    ip_range: str
    containers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HostStatusReport:
    """One host for `orch status`."""

    host: str
    reachable: bool
    error: str = ""
    user: str = ""
    nics: tuple[tuple[str, bool, bool], ...] = ()  # name, UP, PROMISC (False if missing)
    networks: tuple[NetworkStatus, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "reachable": self.reachable,
            "error": self.error,
            "user": self.user,
            "nics": [{"name": n, "up": u, "promisc": p} for n, u, p in self.nics],
            "networks": [
                {
                    "name": n.name,
                    "state": n.state,
                    "detail": n.detail,
                    "ip_range": n.ip_range,
                    "containers": list(n.containers),
                }
                for n in self.networks
            ],
        }


def run_status(ctx: Context) -> list[HostStatusReport]:
    """Per selected host: parent NICs and each inventory network (absent, in sync, drift)."""
    # Every host counts for the ranges, so observe them all (a subset only filters the rows).
    observed = observe_all(ctx, list(ctx.inventory.hosts))
    out = []
    for host in ctx.hosts:
        state = observed.get(host.name)
        if not isinstance(state, HostState):
            out.append(HostStatusReport(host.name, False, error=str(state)))
            continue
        if state.docker_api is None:
            out.append(
                HostStatusReport(
                    host.name, False, user=state.user, error=f"Docker engine: {state.docker_error}"
                )
            )
            continue
        nics = []
        for nic in sorted({promisc_nic(n.parent_for(host)) for n in ctx.inventory.networks}):
            link = state.links.get(nic)
            nics.append((nic, bool(link and link.up), bool(link and link.promisc)))
        nets = []
        for spec in ctx.inventory.networks:
            net = state.networks.get(spec.name)
            word, detail = network_state(ctx.inventory, observed, host, spec)
            containers = tuple(f"{c.name} {c.ipv4}" for c in (net.containers if net else ()))
            rng = str(net.ip_range or "-") if net else "-"
            nets.append(NetworkStatus(spec.name, word, detail, rng, containers))
        out.append(
            HostStatusReport(
                host.name, True, user=state.user, nics=tuple(nics), networks=tuple(nets)
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class TrustResult:
    """`orch trust` for one host."""

    host: str
    ok: bool
    message: str


def run_trust(ctx: Context) -> list[TrustResult]:
    """Connect to each selected host, recording unknown host keys in orch's known_hosts."""
    ctx.trust_new_hosts = True

    def one(host: Host) -> TrustResult:
        session = ctx.session(host)
        session.connect()
        transport = session.connection.transport
        key = transport.get_remote_server_key() if transport is not None else None
        fp = fingerprint(key) if key is not None else "?"
        return TrustResult(host.name, True, f"{key.get_name() if key else '?'} {fp}")

    results = for_each(ctx.hosts, one, cancel=ctx.cancel, name=lambda h: h.name)
    out = []
    for host, r in results.items():
        if isinstance(r, TrustResult):
            out.append(r)
        else:
            out.append(TrustResult(host.name, False, str(r).removeprefix(f"{host.name}: ")))
    return out


def any_reachable(observed: dict[str, HostState | OrchError]) -> bool:
    """False when every host failed to connect (exit code CONNECT)."""
    return any(isinstance(v, HostState) for v in observed.values()) or not observed


__all__ = ["ConnectError", "Context"]
