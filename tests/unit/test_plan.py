"""Planning: inventory + observed hosts -> changes with reasons (pure, table-driven)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ConnectError, OrchError, PlanError
from orchestrator.inventory import parse_inventory
from orchestrator.model import (
    LABEL_MANAGED,
    LABEL_PROMISC_BEFORE,
    LABEL_RANGE,
    Inventory,
)
from orchestrator.plan import (
    Change,
    Plan,
    allocate_ranges,
    check_capacity,
    network_state,
    plan_setup,
    plan_teardown,
)
from orchestrator.state import AttachedContainer, HostState, LinkState, NetworkState, SudoAbility

N = IPv4Network
SUBNET = "172.16.86.0/24"
R0, R64, R128 = N("172.16.86.0/26"), N("172.16.86.64/26"), N("172.16.86.128/26")
DOCKER_DOWN = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)

BASE: dict[str, Any] = {
    "defaults": {"user": "vagrant", "parent": "enp0s9"},
    "ssh": {"known_hosts": "known_hosts"},
    "hosts": [
        {"name": "host1", "address": "192.168.56.101"},
        {"name": "host2", "address": "192.168.56.102"},
    ],
    "networks": [{"name": "mac_net1", "subnet": SUBNET, "gateway": "172.16.86.1"}],
}


def inventory(hosts: int = 2, **network: Any) -> Inventory:
    data = copy.deepcopy(BASE)
    data["hosts"] = [
        {"name": f"host{i}", "address": f"192.168.56.{100 + i}"} for i in range(1, hosts + 1)
    ]
    data["networks"][0].update(network)
    return parse_inventory(data, Path("/inv/hosts.toml"))


INV = inventory()


def link(
    name: str = "enp0s9", *, up: bool = True, promisc: bool = True, lower_up: bool = True
) -> LinkState:
    return LinkState(name=name, up=up, lower_up=lower_up, promisc=promisc)


def net(
    rng: IPv4Network | str | None = R0,
    *,
    name: str = "mac_net1",
    subnet: str = SUBNET,
    gateway: str = "172.16.86.1",
    parent: str = "enp0s9",
    mode: str = "bridge",
    managed: bool = True,
    promisc_before: str = "off",
    containers: tuple[str, ...] = (),
    aux: dict[str, str] | None = None,
) -> NetworkState:
    ip_range = N(rng) if rng is not None else None
    labels = (
        {
            LABEL_MANAGED: "true",
            LABEL_RANGE: str(ip_range),
            LABEL_PROMISC_BEFORE: promisc_before,
        }
        if managed
        else {}
    )
    return NetworkState(
        name=name,
        id=name + "-id",
        driver="macvlan",
        subnet=N(subnet),
        gateway=IPv4Address(gateway),
        ip_range=ip_range,
        parent=parent,
        mode=mode,
        labels=labels,
        containers=tuple(
            AttachedContainer(c, "172.16.86.10", orch_probe=c.startswith("orch-probe-"))
            for c in sorted(containers)  # as parse_network sorts them
        ),
        aux_addresses=aux or {},
    )


def host(
    name: str,
    *networks: NetworkState,
    links: tuple[LinkState, ...] = (link("lo"), link("enp0s8", promisc=False), link()),
    sudo: SudoAbility = "root",
    user: str = "root",
    docker_error: str = "",
) -> HostState:
    return HostState(
        host=name,
        user=user,
        sudo=sudo,
        links={lk.name: lk for lk in links},
        docker_api=None if docker_error else "1.45",
        docker_error=docker_error,
        networks={n.name: n for n in networks},
    )


FRESH_LINKS = (link("lo"), link("enp0s8", promisc=False), link(promisc=False))


def fresh(name: str, **kw: Any) -> HostState:
    return host(name, links=FRESH_LINKS, **kw)


def triples(plan: Plan) -> list[tuple[str, str, str]]:
    return [(c.host, c.action, c.target) for c in plan.changes]


def change(plan: Plan, host_name: str, target: str) -> Change:
    (found,) = [c for c in plan.changes if c.host == host_name and c.target == target]
    return found


# --- the case table ------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    observed: Mapping[str, HostState | OrchError]
    expected: list[tuple[str, str, str]]
    words: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (host, target)
    inv: Inventory = INV
    selected: list[str] | None = None
    replace: bool = False


CASES = [
    Case(
        "fresh hosts",
        {"host1": fresh("host1"), "host2": fresh("host2")},
        [
            ("host1", "create_network", "mac_net1"),
            ("host1", "set_promisc", "enp0s9"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
        {
            ("host1", "enp0s9"): ["not in promiscuous mode", "mac_net1"],
            ("host1", "mac_net1"): ["absent", "enp0s9", "172.16.86.0/26"],
            ("host2", "mac_net1"): ["absent", "172.16.86.64/26"],
        },
    ),
    Case(
        "in sync",
        {"host1": host("host1", net(R0)), "host2": host("host2", net(R64))},
        [
            ("host1", "noop", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {
            ("host1", "enp0s9"): ["up and in promiscuous mode"],
            ("host1", "mac_net1"): ["in sync, range 172.16.86.0/26"],
            ("host2", "mac_net1"): ["in sync, range 172.16.86.64/26"],
        },
    ),
    Case(
        "promisc off only",
        {
            "host1": host("host1", net(R0), links=FRESH_LINKS),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "noop", "mac_net1"),
            ("host1", "set_promisc", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {("host1", "enp0s9"): ["enp0s9 is not in promiscuous mode"]},
    ),
    Case(
        "link down",
        {
            "host1": host("host1", net(R0), links=(link(up=False, lower_up=False),)),
            "host2": host("host2", net(R64), links=(link(up=False, promisc=False),)),
        },
        [
            ("host1", "noop", "mac_net1"),
            ("host1", "set_promisc", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
        {
            ("host1", "enp0s9"): ["enp0s9 is down;"],
            ("host2", "enp0s9"): ["down and not in promiscuous mode"],
        },
    ),
    Case(
        "NIC missing",
        {
            "host1": host("host1", links=(link("lo"), link("eth1"), link("eth0"))),
            "host2": fresh("host2"),
        },
        [
            ("host1", "error", "enp0s9"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
        {("host1", "enp0s9"): ["enp0s9 does not exist", "NICs here: eth0, eth1", "hosts.toml"]},
    ),
    Case(
        "NIC missing, no NICs at all",
        {"host1": host("host1", links=()), "host2": fresh("host2")},
        [
            ("host1", "error", "enp0s9"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
        {("host1", "enp0s9"): ["NICs here: none"]},
    ),
    Case(
        "non-root without sudo needs promisc",
        {"host1": fresh("host1", sudo="no", user="vagrant"), "host2": fresh("host2")},
        [
            ("host1", "error", "enp0s9"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
        {("host1", "enp0s9"): ["vagrant", "not root", "sudo", "ORCH_SUDO_PASSWORD"]},
    ),
    Case(
        "non-root without sudo, promisc already on",
        {"host1": host("host1", sudo="no", user="vagrant"), "host2": fresh("host2")},
        [
            ("host1", "create_network", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
    ),
    Case(
        "non-root with sudo",
        {"host1": fresh("host1", sudo="yes", user="vagrant"), "host2": fresh("host2")},
        [
            ("host1", "create_network", "mac_net1"),
            ("host1", "set_promisc", "enp0s9"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
    ),
    Case(
        "docker down",
        {"host1": fresh("host1", docker_error=DOCKER_DOWN), "host2": fresh("host2")},
        [
            ("host1", "error", "docker"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
        {("host1", "docker"): ["Docker engine does not answer", "Cannot connect"]},
    ),
    Case(
        "unreachable host",
        {
            "host1": ConnectError(
                "host1: cannot connect to vagrant@192.168.56.101:22: [Errno 111] Connection refused"
            ),
            "host2": fresh("host2"),
        },
        [
            ("host1", "error", "-"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
        {("host1", "-"): ["cannot connect to vagrant@192.168.56.101:22", "Connection refused"]},
    ),
    Case(
        "host not observed",
        {"host2": host("host2", net(R64))},
        [
            ("host1", "error", "-"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {("host1", "-"): ["not observed"]},
    ),
    Case(
        "drift: other subnet",
        {
            "host1": host("host1", net("10.9.0.0/26", subnet="10.9.0.0/24", gateway="10.9.0.1")),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "conflict", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {
            ("host1", "mac_net1"): [
                "drift: ",
                "subnet 10.9.0.0/24 (want 172.16.86.0/24)",
                "gateway 10.9.0.1 (want 172.16.86.1)",
                "range 10.9.0.0/26 is not inside 172.16.86.0/24",
                "--replace",
            ]
        },
    ),
    Case(
        "drift: parent",
        {
            "host1": host("host1", net(R0, parent="enp0s10")),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "conflict", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {("host1", "mac_net1"): ["parent enp0s10 (want enp0s9)", "--replace"]},
    ),
    Case(
        "drift: mode, with containers",
        {
            "host1": host(
                "host1",
                net(R0, mode="private", containers=("web", "db", "orch-probe-1234-mac_net1")),
            ),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "conflict", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {
            ("host1", "mac_net1"): [
                "mode private (want bridge)",
                "2 container(s): db, web",
                "--replace",
            ]
        },
    ),
    Case(
        "drift: gateway",
        {
            "host1": host("host1", net(R0, gateway="172.16.86.254")),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "conflict", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {("host1", "mac_net1"): ["gateway 172.16.86.254 (want 172.16.86.1)"]},
    ),
    Case(
        "drift: reserved addresses",
        {
            "host1": host("host1", net(R0, aux={"router": "172.16.86.250"})),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "conflict", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {("host1", "mac_net1"): ["reserved", "172.16.86.250"]},
    ),
    Case(
        "drift: not made by orch",
        {
            "host1": host("host1", net(None, managed=False, containers=("web",))),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "conflict", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {("host1", "mac_net1"): ["not made by orch", "1 container(s): web", "--replace"]},
    ),
    Case(
        "drift: range differs from the pinned one",
        {"host1": host("host1", net(R0)), "host2": host("host2", net(R64))},
        [
            ("host1", "noop", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "conflict", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {("host2", "mac_net1"): ["range 172.16.86.64/26 (want 172.16.86.128/26)"]},
        inv=inventory(ranges={"host2": "172.16.86.128/26"}),
    ),
    Case(
        "drift replaced",
        {
            "host1": host("host1", net(R0, mode="vepa", promisc_before="on", containers=("web",))),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "replace_network", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        {
            ("host1", "mac_net1"): [
                "mode vepa (want bridge)",
                "replace with range 172.16.86.0/26",
                "disconnects 1 container(s): web",
            ]
        },
        replace=True,
    ),
    Case(
        "foreign network replaced",
        {"host1": host("host1", net(None, managed=False)), "host2": fresh("host2")},
        [
            ("host1", "replace_network", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "create_network", "mac_net1"),
            ("host2", "set_promisc", "enp0s9"),
        ],
        {("host1", "mac_net1"): ["not made by orch", "replace with range 172.16.86.0/26"]},
        replace=True,
    ),
    Case(
        "replace leaves in-sync hosts alone",
        {"host1": host("host1", net(R0)), "host2": host("host2", net(R64))},
        [
            ("host1", "noop", "mac_net1"),
            ("host1", "noop", "enp0s9"),
            ("host2", "noop", "mac_net1"),
            ("host2", "noop", "enp0s9"),
        ],
        replace=True,
    ),
    Case(
        "selected host only",
        {"host1": fresh("host1"), "host2": fresh("host2")},
        [("host2", "create_network", "mac_net1"), ("host2", "set_promisc", "enp0s9")],
        {("host2", "mac_net1"): ["172.16.86.64/26"]},
        selected=["host2"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_setup_cases(case: Case) -> None:
    plan = plan_setup(case.inv, case.observed, case.selected, replace=case.replace)
    assert triples(plan) == case.expected
    for (host_name, target), words in case.words.items():
        reason = change(plan, host_name, target).reason
        for word in words:
            assert word in reason, f"{word!r} not in {reason!r}"
    for c in plan.changes:
        assert c.reason, c
        assert "\n" not in c.reason


# --- details the table does not show -------------------------------------------------------------


def test_fresh_hosts_get_the_first_two_slices() -> None:
    plan = plan_setup(INV, {"host1": fresh("host1"), "host2": fresh("host2")})
    assert plan.ranges == {"mac_net1": {"host1": R0, "host2": R64}}
    c1 = change(plan, "host1", "mac_net1")
    assert c1.ip_range == R0 and c1.parent == "enp0s9" and c1.promisc_before is False
    assert c1.network is INV.networks[0]
    assert change(plan, "host2", "mac_net1").ip_range == R64
    nic = change(plan, "host1", "enp0s9")
    assert nic.nic_up is False
    assert all(c.changes_host for c in plan.changes)


def test_set_promisc_brings_a_down_link_up() -> None:
    down = link(up=False, promisc=False, lower_up=False)
    plan = plan_setup(INV, {"host1": host("host1", links=(down,)), "host2": fresh("host2")})
    assert change(plan, "host1", "enp0s9").nic_up is True
    assert change(plan, "host2", "enp0s9").nic_up is False


def test_create_records_promisc_state_before_orch() -> None:
    # promisc already on (someone else turned it on): orch must not turn it off at teardown
    plan = plan_setup(INV, {"host1": host("host1"), "host2": fresh("host2")})
    assert change(plan, "host1", "mac_net1").promisc_before is True
    assert change(plan, "host2", "mac_net1").promisc_before is False


def test_create_inherits_promisc_before_from_another_orch_network_on_the_nic() -> None:
    # orch's old_net turned promisc on earlier: the new network must remember "off"
    other = net("10.20.0.0/26", name="old_net", subnet="10.20.0.0/24", gateway="10.20.0.1")
    plan = plan_setup(INV, {"host1": host("host1", other), "host2": host("host2")})
    assert change(plan, "host1", "mac_net1").promisc_before is False
    assert change(plan, "host2", "mac_net1").promisc_before is True


def test_replace_keeps_the_label_promisc_before() -> None:
    observed = {
        "host1": host("host1", net(R0, mode="private", promisc_before="off")),
        "host2": host("host2", net(R64, mode="private", promisc_before="on")),
    }
    plan = plan_setup(INV, observed, replace=True)
    assert change(plan, "host1", "mac_net1").promisc_before is False
    assert change(plan, "host2", "mac_net1").promisc_before is True
    assert change(plan, "host1", "mac_net1").ip_range == R0
    assert change(plan, "host2", "mac_net1").ip_range == R64


def test_in_sync_plan_is_empty_and_not_blocked() -> None:
    plan = plan_setup(INV, {"host1": host("host1", net(R0)), "host2": host("host2", net(R64))})
    assert plan.empty
    assert not plan.blocked
    assert {c.action for c in plan.changes} == {"noop"}


def test_fresh_plan_is_not_empty() -> None:
    plan = plan_setup(INV, {"host1": fresh("host1"), "host2": fresh("host2")})
    assert not plan.empty
    assert not plan.blocked


@pytest.mark.parametrize(
    "observed",
    [
        {"host1": host("host1", net(R0, mode="private")), "host2": host("host2", net(R64))},
        {"host1": ConnectError("host1: boom"), "host2": host("host2", net(R64))},
        {"host1": fresh("host1", docker_error=DOCKER_DOWN), "host2": host("host2", net(R64))},
    ],
    ids=["conflict", "unreachable", "docker down"],
)
def test_conflicts_and_errors_block_the_plan(observed: Mapping[str, HostState | OrchError]) -> None:
    plan = plan_setup(INV, observed)
    assert plan.blocked
    assert plan.empty  # nothing else to do on host2


def test_plan_as_dict_is_json_with_changes_and_unchanged() -> None:
    plan = plan_setup(INV, {"host1": fresh("host1"), "host2": host("host2", net(R64))})
    data = json.loads(json.dumps(plan.as_dict()))
    assert set(data) == {"changes", "unchanged"}
    for item in data["changes"] + data["unchanged"]:
        assert set(item) == {"host", "action", "target", "reason"}
        assert all(isinstance(v, str) for v in item.values())
    assert [(c["host"], c["action"], c["target"]) for c in data["changes"]] == [
        ("host1", "create_network", "mac_net1"),
        ("host1", "set_promisc", "enp0s9"),
    ]
    assert [(c["host"], c["action"]) for c in data["unchanged"]] == [
        ("host2", "noop"),
        ("host2", "noop"),
    ]


def test_by_host_groups_in_order() -> None:
    plan = plan_setup(INV, {"host1": fresh("host1"), "host2": fresh("host2")})
    grouped = plan.by_host()
    assert list(grouped) == ["host1", "host2"]
    # Networks first (their labels record the NIC's promisc state before orch), then the NIC.
    assert [c.action for c in grouped["host1"]] == ["create_network", "set_promisc"]


# --- ranges --------------------------------------------------------------------------------------


def test_adding_a_host_keeps_the_observed_ranges() -> None:
    inv3 = inventory(hosts=3)
    observed = {
        "host1": host("host1", net(R0)),
        "host2": host("host2", net(R64)),
        "host3": host("host3"),
    }
    plan = plan_setup(inv3, observed)
    assert triples(plan) == [
        ("host1", "noop", "mac_net1"),
        ("host1", "noop", "enp0s9"),
        ("host2", "noop", "mac_net1"),
        ("host2", "noop", "enp0s9"),
        ("host3", "create_network", "mac_net1"),
        ("host3", "noop", "enp0s9"),
    ]
    ranges = plan.ranges["mac_net1"]
    assert ranges["host1"] == R0 and ranges["host2"] == R64
    new = ranges["host3"]
    assert new.subnet_of(N(SUBNET))
    assert not new.overlaps(R0) and not new.overlaps(R64)
    # The hosts already use /26 slices: the new host gets the first free /26 (the slice size
    # stays stable across runs, so that a host that cannot be observed keeps its natural slice).
    assert new == N("172.16.86.128/26")
    assert change(plan, "host3", "mac_net1").ip_range == new


def test_unreachable_hosts_still_get_disjoint_slices() -> None:
    inv3 = inventory(hosts=3)
    observed: dict[str, HostState | OrchError] = {
        "host1": host("host1", net(R0)),
        "host2": ConnectError("host2: down"),
        "host3": host("host3"),
    }
    ranges, problems = allocate_ranges(inv3, observed)
    assert problems == {}
    got = ranges["mac_net1"]
    assert got["host1"] == R0
    assert not got["host3"].overlaps(R0)
    assert not got["host2"].overlaps(got["host3"])


def test_new_host_is_not_given_a_slice_while_another_host_is_unknown() -> None:
    # host2 really has 172.16.86.64/26 (from when there were 2 hosts) but is unreachable now.
    inv3 = inventory(hosts=3)
    observed: dict[str, HostState | OrchError] = {
        "host1": host("host1", net(R0)),
        "host2": ConnectError("host2: down"),
        "host3": host("host3"),
    }
    plan = plan_setup(inv3, observed)
    c3 = change(plan, "host3", "mac_net1")
    assert c3.action != "create_network" or not (c3.ip_range and c3.ip_range.overlaps(R64))


def test_observed_overlapping_ranges_the_later_host_drifts() -> None:
    observed = {
        "host1": host("host1", net(R0)),
        "host2": host("host2", net("172.16.86.32/27")),
    }
    ranges, problems = allocate_ranges(INV, observed)
    assert ranges["mac_net1"]["host1"] == R0
    assert ranges["mac_net1"]["host2"] == R64
    assert problems == {
        ("host2", "mac_net1"): "its range 172.16.86.32/27 overlaps 172.16.86.0/26 of host1"
    }
    plan = plan_setup(INV, observed)
    assert change(plan, "host1", "mac_net1").action == "noop"
    c2 = change(plan, "host2", "mac_net1")
    assert c2.action == "conflict"
    assert "overlaps 172.16.86.0/26 of host1" in c2.reason
    replaced = change(plan_setup(INV, observed, replace=True), "host2", "mac_net1")
    assert replaced.action == "replace_network"
    assert replaced.ip_range == R64


def test_explicit_range_wins_over_an_observed_one() -> None:
    inv = inventory(ranges={"host2": "172.16.86.64/26"})
    observed = {"host1": host("host1", net(R64)), "host2": fresh("host2")}
    ranges, problems = allocate_ranges(inv, observed)
    assert ranges["mac_net1"] == {"host1": R0, "host2": R64}
    assert problems == {
        ("host1", "mac_net1"): "its range 172.16.86.64/26 overlaps 172.16.86.64/26 of host2"
    }
    plan = plan_setup(inv, observed)
    assert change(plan, "host1", "mac_net1").action == "conflict"
    assert change(plan, "host2", "mac_net1").action == "create_network"
    assert change(plan, "host2", "mac_net1").ip_range == R64


def test_ranges_of_foreign_networks_are_not_kept() -> None:
    observed = {
        "host1": host("host1", net(R64, managed=False)),
        "host2": fresh("host2"),
    }
    ranges, problems = allocate_ranges(INV, observed)
    assert ranges["mac_net1"] == {"host1": R0, "host2": R64}
    assert problems == {}


def test_selected_restricts_changes_but_allocation_sees_every_host() -> None:
    observed = {"host1": fresh("host1"), "host2": host("host2", net(R0))}
    plan = plan_setup(INV, observed, selected=["host1"])
    assert {c.host for c in plan.changes} == {"host1"}
    assert change(plan, "host1", "mac_net1").ip_range == R64  # R0 is host2's
    assert plan.ranges["mac_net1"] == {"host1": R64, "host2": R0}


def test_subnet_too_small_for_the_hosts_is_a_plan_error() -> None:
    inv = inventory(hosts=3, subnet="172.16.86.0/29", gateway="172.16.86.1")
    observed = {f"host{i}": fresh(f"host{i}") for i in (1, 2, 3)}
    with pytest.raises(PlanError, match=r"holds 2 slices of /30"):
        plan_setup(inv, observed)
    with pytest.raises(PlanError):
        check_capacity(inv)
    check_capacity(INV)  # fits


def test_vlan_parent_needs_promisc_on_the_base_nic() -> None:
    inv = inventory(parent="enp0s9.10")
    observed = {"host1": fresh("host1"), "host2": host("host2")}
    plan = plan_setup(inv, observed)
    assert triples(plan) == [
        ("host1", "create_network", "mac_net1"),
        ("host1", "set_promisc", "enp0s9"),
        ("host2", "create_network", "mac_net1"),
        ("host2", "noop", "enp0s9"),
    ]
    assert change(plan, "host1", "mac_net1").parent == "enp0s9.10"
    assert "create on enp0s9.10" in change(plan, "host1", "mac_net1").reason


# --- teardown ------------------------------------------------------------------------------------


@dataclass
class TCase:
    id: str
    observed: Mapping[str, HostState | OrchError]
    expected: list[tuple[str, str, str]]
    words: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    force: bool = False
    selected: list[str] | None = None


TEARDOWN = [
    TCase(
        "orch turned promisc on",
        {"host1": host("host1", net(R0)), "host2": host("host2", net(R64))},
        [
            ("host1", "remove_network", "mac_net1"),
            ("host1", "restore_promisc", "enp0s9"),
            ("host2", "remove_network", "mac_net1"),
            ("host2", "restore_promisc", "enp0s9"),
        ],
        {
            ("host1", "mac_net1"): ["made by orch"],
            ("host1", "enp0s9"): ["it was off before"],
        },
    ),
    TCase(
        "promisc was on before orch",
        {
            "host1": host("host1", net(R0, promisc_before="on")),
            "host2": host("host2", net(R64, promisc_before="on")),
        },
        [("host1", "remove_network", "mac_net1"), ("host2", "remove_network", "mac_net1")],
    ),
    TCase(
        "no label: promisc left as it is",
        {
            "host1": host(
                "host1",
                NetworkState(
                    "mac_net1",
                    "id",
                    "macvlan",
                    N(SUBNET),
                    None,
                    R0,
                    "enp0s9",
                    "bridge",
                    labels={LABEL_MANAGED: "true"},
                ),
            ),
            "host2": host("host2"),
        },
        [("host1", "remove_network", "mac_net1"), ("host2", "noop", "mac_net1")],
    ),
    TCase(
        "promisc already off again",
        {"host1": host("host1", net(R0), links=FRESH_LINKS), "host2": host("host2")},
        [("host1", "remove_network", "mac_net1"), ("host2", "noop", "mac_net1")],
        {("host2", "mac_net1"): ["absent"]},
    ),
    TCase(
        "foreign network left alone",
        {
            "host1": host("host1", net(R0, managed=False, containers=("web",))),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "noop", "mac_net1"),
            ("host2", "remove_network", "mac_net1"),
            ("host2", "restore_promisc", "enp0s9"),
        ],
        {("host1", "mac_net1"): ["not made by orch", "left alone"]},
    ),
    TCase(
        "foreign containers refuse",
        {
            "host1": host("host1", net(R0, containers=("web", "orch-probe-1-mac_net1", "db"))),
            "host2": host("host2", net(R64)),
        },
        [
            ("host1", "conflict", "mac_net1"),
            ("host2", "remove_network", "mac_net1"),
            ("host2", "restore_promisc", "enp0s9"),
        ],
        {("host1", "mac_net1"): ["2 container(s) attached: db, web", "--force"]},
    ),
    TCase(
        "foreign containers with force",
        {"host1": host("host1", net(R0, containers=("web",))), "host2": host("host2")},
        [
            ("host1", "remove_network", "mac_net1"),
            ("host1", "restore_promisc", "enp0s9"),
            ("host2", "noop", "mac_net1"),
        ],
        {("host1", "mac_net1"): ["disconnects web"]},
        force=True,
    ),
    TCase(
        "another orch network stays on the NIC",
        {
            "host1": host(
                "host1",
                net(R0),
                net("10.20.0.0/26", name="old_net", subnet="10.20.0.0/24", gateway="10.20.0.1"),
            ),
            "host2": host(
                "host2",
                net(R64),
                net(
                    "10.20.0.0/26",
                    name="vlan_net",
                    subnet="10.20.0.0/24",
                    gateway="10.20.0.1",
                    parent="enp0s9.10",
                ),
            ),
        },
        [("host1", "remove_network", "mac_net1"), ("host2", "remove_network", "mac_net1")],
    ),
    TCase(
        "another orch network on another NIC",
        {
            "host1": host(
                "host1",
                net(R0),
                net(
                    "10.20.0.0/26",
                    name="old_net",
                    subnet="10.20.0.0/24",
                    gateway="10.20.0.1",
                    parent="enp0s10",
                ),
            ),
            "host2": host("host2"),
        },
        [
            ("host1", "remove_network", "mac_net1"),
            ("host1", "restore_promisc", "enp0s9"),
            ("host2", "noop", "mac_net1"),
        ],
    ),
    TCase(
        "a foreign network on the NIC does not keep promisc on",
        {
            "host1": host(
                "host1",
                net(R0),
                net(None, name="lan", subnet="10.30.0.0/24", gateway="10.30.0.1", managed=False),
            ),
            "host2": host("host2"),
        },
        [
            ("host1", "remove_network", "mac_net1"),
            ("host1", "restore_promisc", "enp0s9"),
            ("host2", "noop", "mac_net1"),
        ],
    ),
    TCase(
        "no sudo to restore promisc",
        {"host1": host("host1", net(R0), sudo="no", user="vagrant"), "host2": host("host2")},
        [
            ("host1", "remove_network", "mac_net1"),
            ("host1", "error", "enp0s9"),
            ("host2", "noop", "mac_net1"),
        ],
        {("host1", "enp0s9"): ["vagrant", "sudo"]},
    ),
    TCase(
        "docker down and unreachable",
        {
            "host1": host("host1", net(R0), docker_error=DOCKER_DOWN),
            "host2": ConnectError("host2: no answer from vagrant@192.168.56.102:22 within 10 s"),
        },
        [("host1", "error", "docker"), ("host2", "error", "-")],
        {("host2", "-"): ["no answer from"]},
    ),
    TCase(
        "selected host only",
        {"host1": host("host1", net(R0)), "host2": host("host2", net(R64))},
        [("host2", "remove_network", "mac_net1"), ("host2", "restore_promisc", "enp0s9")],
        selected=["host2"],
    ),
]


@pytest.mark.parametrize("case", TEARDOWN, ids=[c.id for c in TEARDOWN])
def test_plan_teardown_cases(case: TCase) -> None:
    plan = plan_teardown(INV, case.observed, case.selected, force=case.force)
    assert triples(plan) == case.expected
    for (host_name, target), words in case.words.items():
        reason = change(plan, host_name, target).reason
        for word in words:
            assert word in reason, f"{word!r} not in {reason!r}"


def test_teardown_force_flag_only_when_foreign_containers() -> None:
    observed = {
        "host1": host("host1", net(R0, containers=("web",))),
        "host2": host("host2", net(R64, containers=("orch-probe-9-mac_net1",))),
    }
    plan = plan_teardown(INV, observed, force=True)
    assert change(plan, "host1", "mac_net1").force is True
    assert change(plan, "host2", "mac_net1").force is False


def test_teardown_vlan_parent_restores_the_base_nic() -> None:
    inv = inventory(parent="enp0s9.10")
    observed = {
        "host1": host("host1", net(R0, parent="enp0s9.10")),
        "host2": host("host2"),
    }
    plan = plan_teardown(inv, observed)
    assert triples(plan) == [
        ("host1", "remove_network", "mac_net1"),
        ("host1", "restore_promisc", "enp0s9"),
        ("host2", "noop", "mac_net1"),
    ]


def test_teardown_of_nothing_is_empty() -> None:
    plan = plan_teardown(INV, {"host1": host("host1"), "host2": host("host2")})
    assert plan.empty and not plan.blocked
    assert plan.as_dict() == {
        "changes": [],
        "unchanged": [
            {"host": "host1", "action": "noop", "target": "mac_net1", "reason": "absent"},
            {"host": "host2", "action": "noop", "target": "mac_net1", "reason": "absent"},
        ],
    }


def test_network_state_does_not_call_an_unplannable_host_drifted() -> None:
    # promisc off and no passwordless sudo: setup cannot plan this host's NIC, but the network
    # itself is in sync, and status/verify must say so (not "drift").
    nosudo = host("host1", net(R0), links=FRESH_LINKS, sudo="no", user="alice")
    observed = {"host1": nosudo, "host2": host("host2", net(R64))}
    h1 = INV.hosts[0]
    spec = INV.networks[0]
    assert network_state(INV, observed, h1, spec) == ("in sync", "")
    other = host("host1", net(R0, subnet="10.9.0.0/24", gateway="10.9.0.1"))
    word, detail = network_state(INV, {"host1": other, "host2": observed["host2"]}, h1, spec)
    assert word == "drift" and "subnet 10.9.0.0/24" in detail
    assert network_state(INV, {"host1": host("host1")}, h1, spec) == ("absent", "run orch setup")
