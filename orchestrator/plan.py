"""Turn the inventory and the observed hosts into a plan: a list of changes, each with a reason.

Pure: no I/O. `plan_setup` decides per-host ranges (keeping what hosts already have), then compares
each host with the inventory. Drift (a network of the inventory's name with other settings, or one
orch did not make) is a `conflict` unless `replace` is asked for; orch never recreates silently.
`plan_teardown` removes only what carries orch's labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Literal

from orchestrator.errors import OrchError
from orchestrator.ipalloc import allocate, default_prefix
from orchestrator.model import Host, Inventory, NetworkSpec
from orchestrator.state import HostState, NetworkState, promisc_nic

Action = Literal[
    "set_promisc",  # ip link set <nic> [up] promisc on
    "create_network",
    "replace_network",  # remove the drifted network, create the right one (--replace)
    "remove_network",
    "restore_promisc",  # ip link set <nic> promisc off (teardown)
    "noop",  # nothing to do; the reason says why
    "conflict",  # would need a destructive change that was not allowed
    "error",  # the host cannot be planned (unreachable, NIC missing, ...)
]
CHANGING: frozenset[str] = frozenset(
    {"set_promisc", "create_network", "replace_network", "remove_network", "restore_promisc"}
)

Observed = Mapping[str, HostState | OrchError]


@dataclass(frozen=True, slots=True)
class Change:
    """One thing to do (or not) on one host."""

    host: str
    action: Action
    target: str  # a NIC or a network name
    reason: str
    network: NetworkSpec | None = None
    ip_range: IPv4Network | None = None
    nic_up: bool = False  # set_promisc: also bring the link up
    promisc_before: bool = False  # create/replace: the parent's promisc state before orch
    force: bool = False  # remove_network: disconnect foreign containers first
    parent: str = ""  # create/replace: the parent NIC on this host

    @property
    def changes_host(self) -> bool:
        return self.action in CHANGING

    def as_dict(self) -> dict[str, str]:
        return {
            "host": self.host,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """Changes in host order; `ranges` is the allocation per network and host."""

    changes: tuple[Change, ...]
    ranges: dict[str, dict[str, IPv4Network]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when nothing would change on any host."""
        return not any(c.changes_host for c in self.changes)

    @property
    def blocked(self) -> bool:
        """True when a host has a conflict or an error."""
        return any(c.action in ("conflict", "error") for c in self.changes)

    def by_host(self) -> dict[str, list[Change]]:
        out: dict[str, list[Change]] = {}
        for change in self.changes:
            out.setdefault(change.host, []).append(change)
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "changes": [c.as_dict() for c in self.changes if c.action != "noop"],
            "unchanged": [c.as_dict() for c in self.changes if c.action == "noop"],
        }


def _differences(spec: NetworkSpec, host: Host, net: NetworkState) -> list[str]:
    diffs = []
    if net.driver != spec.driver:
        diffs.append(f"driver {net.driver} (want {spec.driver})")
    if net.subnet != spec.subnet:
        diffs.append(f"subnet {net.subnet} (want {spec.subnet})")
    if net.gateway != spec.gateway:
        diffs.append(f"gateway {net.gateway} (want {spec.gateway})")
    parent = spec.parent_for(host)
    if net.parent != parent:
        diffs.append(f"parent {net.parent or '-'} (want {parent})")
    if net.driver == "macvlan" and net.mode != spec.mode:
        diffs.append(f"mode {net.mode} (want {spec.mode})")
    want_aux = {k: str(v) for k, v in spec.reserved}
    if net.aux_addresses != want_aux:
        diffs.append(f"reserved {net.aux_addresses or '{}'} (want {want_aux or '{}'})")
    return diffs


def allocate_ranges(
    inventory: Inventory, observed: Observed
) -> tuple[dict[str, dict[str, IPv4Network]], dict[tuple[str, str], str]]:
    """Ranges per network and host, and the range problems found per (host, network).

    A range a host already has is kept when it lies in the subnet and clashes with no earlier
    host's; the inventory's explicit ranges always win. Everyone else gets a free slice.
    """
    names = [h.name for h in inventory.hosts]
    ranges: dict[str, dict[str, IPv4Network]] = {}
    problems: dict[tuple[str, str], str] = {}
    for spec in inventory.networks:
        fixed: dict[str, IPv4Network] = {h: r for h, r in spec.ranges}
        for host in names:
            if host in fixed:
                continue
            state = observed.get(host)
            if not isinstance(state, HostState):
                continue
            net = state.networks.get(spec.name)
            if net is None or net.ip_range is None or not net.managed:
                continue
            rng = net.ip_range
            clash = next((h for h, r in fixed.items() if r.overlaps(rng)), None)
            if net.subnet != spec.subnet or not rng.subnet_of(spec.subnet):
                problems[(host, spec.name)] = f"its range {rng} is not inside {spec.subnet}"
            elif clash is not None:
                problems[(host, spec.name)] = f"its range {rng} overlaps {fixed[clash]} of {clash}"
            else:
                fixed[host] = rng
        prefix = (
            spec.range_prefix
            or _kept_prefix(observed, spec.name)
            or default_prefix(spec.subnet, len(names))
        )
        ranges[spec.name] = allocate(spec.subnet, names, prefix, fixed, network=spec.name)
    return ranges, problems


def _kept_prefix(observed: Observed, network: str) -> int | None:
    """The slice size the hosts already use for `network` (the most common one), if any.

    Keeping it stable matters: a host that cannot be observed right now keeps the slice it would
    get in inventory order only if the slice size does not change between runs.
    """
    sizes: dict[int, int] = {}
    for state in observed.values():
        if isinstance(state, HostState):
            net = state.networks.get(network)
            if net is not None and net.managed and net.ip_range is not None:
                sizes[net.ip_range.prefixlen] = sizes.get(net.ip_range.prefixlen, 0) + 1
    return max(sizes, key=lambda p: (sizes[p], -p)) if sizes else None


def plan_setup(
    inventory: Inventory,
    observed: Observed,
    selected: list[str] | None = None,
    replace: bool = False,
) -> Plan:
    """The changes that make the selected hosts match the inventory.

    Args:
        inventory: the whole inventory (every host counts for range allocation).
        observed: per host, its state or the error met while observing it.
        selected: host names to plan for (all when None).
        replace: allow replacing drifted or foreign networks.

    Raises:
        PlanError: the subnet cannot hold the hosts.
    """
    ranges, problems = allocate_ranges(inventory, observed)
    changes: list[Change] = []
    for host in inventory.hosts:
        if selected and host.name not in selected:
            continue
        changes.extend(
            _plan_host(inventory, host, observed.get(host.name), ranges, problems, replace)
        )
    return Plan(tuple(changes), ranges)


def _host_error(host: Host, state: HostState | OrchError | None) -> Change | None:
    if state is None:
        return Change(host.name, "error", "-", "not observed")
    if isinstance(state, OrchError):
        return Change(host.name, "error", "-", str(state).removeprefix(f"{host.name}: "))
    if state.docker_api is None:
        return Change(
            host.name,
            "error",
            "docker",
            f"the Docker engine does not answer: {state.docker_error}",
        )
    return None


def _plan_host(
    inventory: Inventory,
    host: Host,
    state: HostState | OrchError | None,
    ranges: dict[str, dict[str, IPv4Network]],
    problems: dict[tuple[str, str], str],
    replace: bool,
) -> list[Change]:
    error = _host_error(host, state)
    if error is not None:
        return [error]
    assert isinstance(state, HostState)
    out: list[Change] = []
    # Networks first, then the NIC: a network records the NIC's promisc state before orch in
    # its labels, so a run cut short between the two steps still knows what to restore.
    # (Creating a macvlan network does not need the parent in promiscuous mode; containers
    # attach only later.)
    nic_changes: list[Change] = []
    nics: dict[str, list[str]] = {}
    for spec in inventory.networks:
        nics.setdefault(promisc_nic(spec.parent_for(host)), []).append(spec.name)
    bad_nics: set[str] = set()
    for nic, users in nics.items():
        link = state.links.get(nic)
        if link is None:
            present = ", ".join(sorted(n for n in state.links if n != "lo")) or "none"
            nic_changes.append(
                Change(
                    host.name,
                    "error",
                    nic,
                    f"parent NIC {nic} does not exist (NICs here: {present}); fix "
                    f"parent in hosts.toml",
                )
            )
            bad_nics.add(nic)
            continue
        if state.sudo == "no":
            needs = not link.promisc or not link.up
            if needs:
                nic_changes.append(
                    Change(
                        host.name,
                        "error",
                        nic,
                        f"user {state.user} is not root and cannot use sudo without a "
                        f"password to run `ip link set {nic} promisc on`; grant "
                        "passwordless sudo, or set ORCH_SUDO_PASSWORD",
                    )
                )
                bad_nics.add(nic)
                continue
        if link.promisc and link.up:
            nic_changes.append(
                Change(host.name, "noop", nic, f"{nic} is up and in promiscuous mode")
            )
        else:
            why = "not in promiscuous mode" if not link.promisc else "down"
            if not link.promisc and not link.up:
                why = "down and not in promiscuous mode"
            nic_changes.append(
                Change(
                    host.name,
                    "set_promisc",
                    nic,
                    f"{nic} is {why}; {', '.join(users)} "
                    f"{'needs' if len(users) == 1 else 'need'} it to receive frames for "
                    "container MACs",
                    nic_up=not link.up,
                )
            )
    for spec in inventory.networks:
        nic = promisc_nic(spec.parent_for(host))
        if nic in bad_nics:
            continue
        rng = ranges[spec.name][host.name]
        link = state.links[nic]
        existing = state.networks.get(spec.name)
        out.append(
            _plan_network(
                host,
                spec,
                rng,
                existing,
                link.promisc,
                problems.get((host.name, spec.name)),
                replace,
                state.networks,
            )
        )
    return out + nic_changes


def drift(
    spec: NetworkSpec,
    host: Host,
    net: NetworkState,
    rng: IPv4Network,
    range_problem: str | None = None,
) -> list[str]:
    """How an existing network differs from the inventory on `host` (empty: in sync)."""
    diffs = _differences(spec, host, net)
    if not net.managed:
        diffs.insert(0, "not made by orch")
    if net.ip_range != rng:
        if range_problem:
            diffs.append(range_problem)
        elif net.managed:
            diffs.append(f"range {net.ip_range} (want {rng})")
    return diffs


def network_state(
    inventory: Inventory, observed: Observed, host: Host, spec: NetworkSpec
) -> tuple[str, str]:
    """(absent | in sync | drift | not orch's, detail) of `spec` on `host`, for status and hints.

    Raises:
        PlanError: the subnet cannot hold the hosts.
    """
    state = observed.get(host.name)
    net = state.networks.get(spec.name) if isinstance(state, HostState) else None
    if net is None:
        return "absent", "run orch setup"
    ranges, problems = allocate_ranges(inventory, observed)
    diffs = drift(
        spec, host, net, ranges[spec.name][host.name], problems.get((host.name, spec.name))
    )
    if not diffs:
        return "in sync", ""
    return ("drift" if net.managed else "not orch's"), "; ".join(diffs)


def _plan_network(
    host: Host,
    spec: NetworkSpec,
    rng: IPv4Network,
    existing: NetworkState | None,
    nic_promisc: bool,
    range_problem: str | None,
    replace: bool,
    all_networks: dict[str, NetworkState],
) -> Change:
    if existing is None:
        # Promisc before orch: inherited from another orch network on the same NIC, if any.
        before = nic_promisc
        for other in all_networks.values():
            same_nic = promisc_nic(other.parent) == promisc_nic(spec.parent_for(host))
            if other.managed and same_nic and other.promisc_before is not None:
                before = other.promisc_before
        return Change(
            host.name,
            "create_network",
            spec.name,
            f"absent; create on {spec.parent_for(host)} with range {rng}",
            network=spec,
            ip_range=rng,
            promisc_before=before,
            parent=spec.parent_for(host),
        )
    diffs = drift(spec, host, existing, rng, range_problem)
    if not diffs:
        return Change(
            host.name, "noop", spec.name, f"in sync, range {rng}", network=spec, ip_range=rng
        )
    before = existing.promisc_before if existing.promisc_before is not None else nic_promisc
    attached = existing.foreign_containers
    victims = (
        f"; replacing disconnects {len(attached)} container(s): "
        + ", ".join(c.name for c in attached)
        if attached
        else ""
    )
    if replace:
        return Change(
            host.name,
            "replace_network",
            spec.name,
            f"drift: {'; '.join(diffs)}; replace with range {rng}{victims}",
            network=spec,
            ip_range=rng,
            promisc_before=before,
            parent=spec.parent_for(host),
        )
    return Change(
        host.name,
        "conflict",
        spec.name,
        f"drift: {'; '.join(diffs)}{victims}; rerun with --replace to recreate it",
        network=spec,
        ip_range=rng,
    )


def plan_teardown(
    inventory: Inventory,
    observed: Observed,
    selected: list[str] | None = None,
    force: bool = False,
) -> Plan:
    """Remove orch's networks and put promisc back where orch turned it on.

    Foreign containers attached to a network block its removal unless `force`.
    """
    changes: list[Change] = []
    for host in inventory.hosts:
        if selected and host.name not in selected:
            continue
        state = observed.get(host.name)
        error = _host_error(host, state)
        if error is not None:
            changes.append(error)
            continue
        assert isinstance(state, HostState)
        restore: dict[str, bool] = {}  # nic -> may turn promisc off
        blocked_nics: set[str] = set()
        for spec in inventory.networks:
            net = state.networks.get(spec.name)
            nic = promisc_nic(spec.parent_for(host))
            if net is None:
                changes.append(Change(host.name, "noop", spec.name, "absent"))
                continue
            if not net.managed:
                changes.append(Change(host.name, "noop", spec.name, "not made by orch; left alone"))
                continue
            nic = promisc_nic(net.parent or spec.parent_for(host))
            foreign = net.foreign_containers
            if foreign and not force:
                changes.append(
                    Change(
                        host.name,
                        "conflict",
                        spec.name,
                        f"{len(foreign)} container(s) attached: "
                        f"{', '.join(c.name for c in foreign)}; stop them or "
                        "rerun with --force",
                    )
                )
                blocked_nics.add(nic)
                continue
            reason = "made by orch"
            if foreign:
                reason += f"; disconnects {', '.join(c.name for c in foreign)}"
            changes.append(
                Change(host.name, "remove_network", spec.name, reason, force=bool(foreign))
            )
            if net.promisc_before is False:
                restore[nic] = True
        # Other orch networks (outside this inventory) on the same NIC keep promisc on.
        removed = {
            c.target for c in changes if c.host == host.name and c.action == "remove_network"
        }
        for net in state.networks.values():
            if net.managed and net.name not in removed:
                blocked_nics.add(promisc_nic(net.parent))
        for nic in restore:
            link = state.links.get(nic)
            if nic in blocked_nics or link is None or not link.promisc:
                continue
            if state.sudo == "no":
                changes.append(
                    Change(
                        host.name,
                        "error",
                        nic,
                        f"cannot turn promisc off: user {state.user} has no passwordless sudo",
                    )
                )
                continue
            changes.append(
                Change(
                    host.name,
                    "restore_promisc",
                    nic,
                    "orch turned promiscuous mode on; it was off before",
                )
            )
    return Plan(tuple(changes))


def check_capacity(inventory: Inventory) -> None:
    """Fail early when a subnet cannot hold a slice per host at all.

    Raises:
        PlanError: with the numbers.
    """
    for spec in inventory.networks:
        prefix = spec.range_prefix or default_prefix(spec.subnet, len(inventory.hosts))
        allocate(
            spec.subnet,
            [h.name for h in inventory.hosts],
            prefix,
            dict(spec.ranges),
            network=spec.name,
        )
