"""hosts.toml loading and validation: every problem names its field and says how to fix it."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ExitCode, InventoryError
from orchestrator.inventory import load_inventory, parse_inventory
from orchestrator.model import Inventory

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "hosts.toml"
SOURCE = Path("/inv/hosts.toml")

BASE: dict[str, Any] = {
    "defaults": {"user": "vagrant", "identity_file": "keys/id_ed25519", "parent": "enp0s9"},
    "ssh": {"known_hosts": "keys/known_hosts", "connect_timeout": 10},
    "hosts": [
        {"name": "host1", "address": "192.168.56.101"},
        {"name": "host2", "address": "192.168.56.102"},
    ],
    "networks": [
        {
            "name": "mac_net1",
            "driver": "macvlan",
            "subnet": "172.16.86.0/24",
            "gateway": "172.16.86.1",
            "mode": "bridge",
        }
    ],
    "verify": {"image": "orch-probe:latest", "count": 3, "interval": 0.2, "timeout": 1},
}


def doc(**changes: Any) -> dict[str, Any]:
    """A deep copy of BASE with `changes` applied: keys are dotted paths, e.g. "hosts.0.user".

    A value of DELETE removes the key.
    """
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        elif value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return data


DELETE = object()


def parse(data: dict[str, Any]) -> Inventory:
    return parse_inventory(data, SOURCE)


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InventoryError) as info:
        parse(data)
    problems = info.value.problems
    assert problems, "an InventoryError must carry at least one problem"
    assert str(info.value) == "\n".join(problems)
    for line in problems:
        assert line.startswith("hosts.toml: ")
        assert len(line.splitlines()) == 1, line
    return problems


def lines_for(problems: list[str], field: str) -> list[str]:
    return [line for line in problems if line.startswith(f"hosts.toml: {field}: ")]


# --- the example and what a valid file yields ----------------------------------------------------


def _resolved(raw: str) -> Path:
    """`raw` as a path in the example: ~ expanded, relative to the file's directory."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else REPO / path


def test_example_hosts_toml_loads() -> None:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    inv = load_inventory(EXAMPLE)
    assert inv.path == EXAMPLE
    assert [h.name for h in inv.hosts] == ["host1", "host2"]
    assert [h.address for h in inv.hosts] == ["192.168.56.101", "192.168.56.102"]
    key = _resolved(raw["defaults"]["identity_file"])
    for host in inv.hosts:
        assert host.user == "vagrant"
        assert host.port is None
        assert host.parent == "enp0s9"
        assert host.identity_file == key
    (net,) = inv.networks
    assert net.name == "mac_net1"
    assert net.driver == "macvlan"
    assert net.subnet == IPv4Network("172.16.86.0/24")
    assert net.gateway == IPv4Address("172.16.86.1")
    assert net.mode == "bridge"
    assert net.parent is None
    assert net.range_prefix is None
    assert net.reserved == ()
    assert net.ranges == ()
    assert net.parent_for(inv.hosts[0]) == "enp0s9"
    assert inv.ssh.known_hosts == _resolved(raw["ssh"]["known_hosts"])
    assert inv.ssh.known_hosts.is_absolute()
    assert inv.ssh.connect_timeout == 10.0
    assert inv.ssh.command_timeout == 60.0
    assert inv.verify.image == "orch-probe:latest"
    assert (inv.verify.count, inv.verify.interval, inv.verify.timeout) == (3, 0.2, 1.0)


def test_defaults_are_inherited_and_overridden_per_host() -> None:
    data = doc(**{"defaults.port": 2222})
    data["hosts"][1].update(user="admin", port=22, identity_file="/k/other", parent="eth1")
    inv = parse(data)
    h1, h2 = inv.hosts
    assert (h1.user, h1.port, h1.identity_file, h1.parent) == (
        "vagrant", 2222, Path("/inv/keys/id_ed25519"), "enp0s9",
    )  # fmt: skip
    assert (h2.user, h2.port, h2.identity_file, h2.parent) == (
        "admin", 22, Path("/k/other"), "eth1",
    )  # fmt: skip
    assert inv.networks[0].parent_for(h2) == "eth1"


def test_without_defaults_hosts_use_ssh_config_and_network_parent() -> None:
    data = doc(defaults=DELETE, **{"networks.0.parent": "enp0s9.10"})
    inv = parse(data)
    for host in inv.hosts:
        assert (host.user, host.port, host.identity_file, host.parent) == (None,) * 4
        assert inv.networks[0].parent_for(host) == "enp0s9.10"


def test_optional_sections_take_their_defaults() -> None:
    data = doc(ssh=DELETE, verify=DELETE, **{"networks.0.gateway": DELETE})
    inv = parse(data)
    assert inv.networks[0].gateway == IPv4Address("172.16.86.1")
    assert inv.ssh.known_hosts == Path("~/.config/orch/known_hosts").expanduser()
    assert (inv.ssh.connect_timeout, inv.ssh.command_timeout) == (10.0, 60.0)
    # The defaults are real values, not the dataclass slot descriptors.
    assert inv.verify.image == "orch-probe:latest"
    assert (inv.verify.count, inv.verify.interval, inv.verify.timeout) == (3, 0.2, 1.0)


def test_relative_paths_are_resolved_against_the_files_directory(tmp_path: Path) -> None:
    folder = tmp_path / "inventories" / "lab"
    folder.mkdir(parents=True)
    path = folder / "hosts.toml"
    path.write_text(
        """
[defaults]
identity_file = "keys/id_ed25519"
parent = "eth1"
[ssh]
known_hosts = "../known_hosts"
[[hosts]]
name = "a"
address = "10.0.0.1"
[[hosts]]
name = "b"
address = "10.0.0.2"
identity_file = "/abs/key"
[[hosts]]
name = "c"
address = "10.0.0.3"
identity_file = "~/.ssh/id_c"
[[networks]]
name = "net"
subnet = "172.16.0.0/24"
""",
        encoding="utf-8",
    )
    inv = load_inventory(path)
    a, b, c = inv.hosts
    assert a.identity_file == folder / "keys/id_ed25519"
    assert b.identity_file == Path("/abs/key")
    assert c.identity_file == Path("~/.ssh/id_c").expanduser()
    assert inv.ssh.known_hosts == folder / "../known_hosts"


@pytest.mark.parametrize(
    ("value", "prefix"),
    [("/26", 26), ("/25", 25), (64, 26), (50, 26), (4, 30), (128, 25)],
)
def test_range_size_accepts_a_prefix_or_a_number_of_addresses(value: object, prefix: int) -> None:
    inv = parse(doc(**{"networks.0.range_size": value}))
    assert inv.networks[0].range_prefix == prefix


def test_reserved_and_ranges_are_kept() -> None:
    data = doc(
        **{
            "networks.0.reserved": {"router": "172.16.86.254"},
            "networks.0.ranges": {"host1": "172.16.86.64/26", "host2": "172.16.86.128/25"},
        }
    )
    net = parse(data).networks[0]
    assert net.reserved == (("router", IPv4Address("172.16.86.254")),)
    assert net.explicit_range("host1") == IPv4Network("172.16.86.64/26")
    assert net.explicit_range("host2") == IPv4Network("172.16.86.128/25")
    assert net.explicit_range("host3") is None
    listed = parse(doc(**{"networks.0.reserved": ["172.16.86.253", "172.16.86.254"]}))
    assert [a for _, a in listed.networks[0].reserved] == [
        IPv4Address("172.16.86.253"),
        IPv4Address("172.16.86.254"),
    ]


@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("192.168.56.101", "192.168.56.101"),
        ("docker-1.example.com", "docker-1.example.com"),
        ("node7", "node7"),
        ("fd00::1", "fd00::1"),
        ("FD00:0::1", "fd00::1"),
        ("fe80::1%eth1", "fe80::1%eth1"),
    ],
)
def test_valid_addresses_are_accepted(address: str, stored: str) -> None:
    assert parse(doc(**{"hosts.0.address": address})).hosts[0].address == stored


def test_same_address_on_another_port_is_allowed() -> None:
    data = doc(**{"hosts.1.address": "192.168.56.101", "hosts.1.port": 2200})
    assert [h.port for h in parse(data).hosts] == [None, 2200]


def test_two_disjoint_networks_are_accepted() -> None:
    data = doc()
    data["networks"].append({"name": "mac_net2", "subnet": "172.16.87.0/24", "mode": "private"})
    inv = parse(data)
    assert [(n.name, n.mode) for n in inv.networks] == [
        ("mac_net1", "bridge"),
        ("mac_net2", "private"),
    ]


# --- each kind of problem names its field and gives a fix ----------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(**changes: Any) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        data.clear()
        data.update(doc(**changes))

    return apply


def _add_network(**fields: Any) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        data["networks"].append({"name": "mac_net2", **fields})

    return apply


def _add_host(**fields: Any) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        data["hosts"].append(fields)

    return apply


NET = "networks[0]"
PROBLEMS: list[tuple[str, Mutation, str, str]] = [
    # (id, mutation, field path, fragment of the fix)
    ("cidr-garbage", _set(**{"networks.0.subnet": "not-a-cidr"}), f"{NET}.subnet",
     "write it like 172.16.86.0/24"),
    ("cidr-prefix-33", _set(**{"networks.0.subnet": "172.16.86.0/33"}), f"{NET}.subnet",
     "write it like 172.16.86.0/24"),
    ("cidr-octet-300", _set(**{"networks.0.subnet": "172.16.300.0/24"}), f"{NET}.subnet",
     "write it like 172.16.86.0/24"),
    ("cidr-not-string", _set(**{"networks.0.subnet": 24}), f"{NET}.subnet",
     "must be a CIDR string such as 172.16.86.0/24"),
    ("cidr-no-prefix", _set(**{"networks.0.subnet": "172.16.86.0"}), f"{NET}.subnet",
     "no prefix length; did you mean 172.16.86.0/24?"),
    ("cidr-ipv6", _set(**{"networks.0.subnet": "fd00::/64"}), f"{NET}.subnet",
     "IPv4 subnets only"),
    ("cidr-host-bits", _set(**{"networks.0.subnet": "172.16.86.5/24"}), f"{NET}.subnet",
     "host bits set; did you mean 172.16.86.0/24?"),
    ("subnet-too-small", _set(**{"networks.0.subnet": "172.16.86.0/30"}), f"{NET}.subnet",
     "use /29 or larger"),
    ("gateway-outside", _set(**{"networks.0.gateway": "10.0.0.1"}), f"{NET}.gateway",
     "use one such as 172.16.86.1"),
    ("gateway-network-address", _set(**{"networks.0.gateway": "172.16.86.0"}),
     f"{NET}.gateway", "use one such as 172.16.86.1"),
    ("gateway-broadcast", _set(**{"networks.0.gateway": "172.16.86.255"}), f"{NET}.gateway",
     "use one such as 172.16.86.1"),
    ("gateway-not-address", _set(**{"networks.0.gateway": "gw"}), f"{NET}.gateway",
     "write it like 172.16.86.1"),
    ("ranges-overlap",
     _set(**{"networks.0.ranges": {"host1": "172.16.86.64/26", "host2": "172.16.86.96/27"}}),
     f"{NET}.ranges.host2", "per-host ranges must not overlap"),
    ("range-outside-subnet", _set(**{"networks.0.ranges": {"host1": "10.0.0.0/26"}}),
     f"{NET}.ranges.host1", "pick a slice of it"),
    ("range-larger-than-subnet", _set(**{"networks.0.ranges": {"host1": "172.16.0.0/16"}}),
     f"{NET}.ranges.host1", "pick a slice of it"),
    ("range-host-bits", _set(**{"networks.0.ranges": {"host1": "172.16.86.65/26"}}),
     f"{NET}.ranges.host1", "did you mean 172.16.86.64/26?"),
    ("range-unknown-host-typo", _set(**{"networks.0.ranges": {"hots1": "172.16.86.64/26"}}),
     f"{NET}.ranges.hots1", "did you mean 'host1'?"),
    ("range-unknown-host", _set(**{"networks.0.ranges": {"zzz": "172.16.86.64/26"}}),
     f"{NET}.ranges.zzz", "name a host of [[hosts]]"),
    ("ranges-not-table", _set(**{"networks.0.ranges": ["172.16.86.64/26"]}), f"{NET}.ranges",
     "must be a table"),
    ("range-contains-gateway", _set(**{"networks.0.ranges": {"host1": "172.16.86.0/26"}}),
     f"{NET}.ranges.host1", "move the gateway or the range"),
    ("duplicate-host-name", _set(**{"hosts.1.name": "host1"}), "hosts[1].name",
     "host names must be unique"),
    ("duplicate-address", _set(**{"hosts.1.address": "192.168.56.101"}), "hosts[1].address",
     "each host needs its own address"),
    ("duplicate-address-same-port", _set(**{
        "hosts.0.port": 22, "hosts.1.port": 22, "hosts.1.address": "192.168.56.101",
    }), "hosts[1].address", "each host needs its own address"),
    ("duplicate-network-name", _add_network(name="mac_net1", subnet="172.16.87.0/24"),
     "networks[1].name", "network names must be unique"),
    ("unknown-key-network", _set(**{"networks.0.subnett": "172.16.86.0/24"}),
     f"{NET}.subnett", "did you mean 'subnet'?"),
    ("unknown-key-host", _set(**{"hosts.0.adress": "x"}), "hosts[0].adress",
     "did you mean 'address'?"),
    ("unknown-key-top", _set(host=[]), "host", "did you mean 'hosts'?"),
    ("unknown-key-defaults", _set(**{"defaults.usr": "x"}), "defaults.usr",
     "did you mean 'user'?"),
    ("unknown-key-ssh", _set(**{"ssh.known_host": "x"}), "ssh.known_host",
     "did you mean 'known_hosts'?"),
    ("unknown-key-verify", _set(**{"verify.imag": "x"}), "verify.imag",
     "did you mean 'image'?"),
    ("unknown-key-no-match", _set(**{"verify.zzzzzz": 1}), "verify.zzzzzz",
     "allowed: image, count, interval, timeout"),
    ("ifname-16-chars", _set(**{"defaults.parent": "a" * 16}), "defaults.parent",
     "use 1-15 letters"),
    ("ifname-slash", _set(**{"hosts.0.parent": "eth/0"}), "hosts[0].parent",
     "use 1-15 letters"),
    ("ifname-colon", _set(**{"networks.0.parent": "eth0:1"}), f"{NET}.parent",
     "use 1-15 letters"),
    ("ifname-space", _set(**{"hosts.1.parent": "eth 0"}), "hosts[1].parent",
     "use 1-15 letters"),
    ("ifname-leading-dash", _set(**{"networks.0.parent": "-eth0"}), f"{NET}.parent",
     "use 1-15 letters"),
    ("ifname-empty", _set(**{"defaults.parent": ""}), "defaults.parent", "use 1-15 letters"),
    ("ifname-not-string", _set(**{"defaults.parent": 1}), "defaults.parent",
     "must be a string (interface name)"),
    ("netname-one-char", _set(**{"networks.0.name": "a"}), f"{NET}.name", "use 2-64 letters"),
    ("netname-leading-dash", _set(**{"networks.0.name": "-net"}), f"{NET}.name",
     "use 2-64 letters"),
    ("netname-leading-dot", _set(**{"networks.0.name": ".net"}), f"{NET}.name",
     "use 2-64 letters"),
    ("netname-leading-underscore", _set(**{"networks.0.name": "_net"}), f"{NET}.name",
     "use 2-64 letters"),
    ("netname-space", _set(**{"networks.0.name": "my net"}), f"{NET}.name", "use 2-64 letters"),
    ("netname-slash", _set(**{"networks.0.name": "net/1"}), f"{NET}.name", "use 2-64 letters"),
    ("netname-colon", _set(**{"networks.0.name": "net:1"}), f"{NET}.name", "use 2-64 letters"),
    ("netname-65-chars", _set(**{"networks.0.name": "n" * 65}), f"{NET}.name",
     "use 2-64 letters"),
    ("netname-predefined-bridge", _set(**{"networks.0.name": "bridge"}), f"{NET}.name",
     "pick another name"),
    ("netname-predefined-host", _set(**{"networks.0.name": "host"}), f"{NET}.name",
     "pick another name"),
    ("netname-predefined-none", _set(**{"networks.0.name": "none"}), f"{NET}.name",
     "pick another name"),
    ("driver-bridge", _set(**{"networks.0.driver": "bridge"}), f"{NET}.driver",
     "use one of: macvlan"),
    ("driver-ipvlan", _set(**{"networks.0.driver": "ipvlan"}), f"{NET}.driver",
     "use one of: macvlan"),
    ("driver-not-string", _set(**{"networks.0.driver": ["macvlan"]}), f"{NET}.driver",
     "use one of: macvlan"),
    ("mode-bad", _set(**{"networks.0.mode": "vlan"}), f"{NET}.mode",
     "use one of: bridge, private, vepa, passthru"),
    ("mode-case", _set(**{"networks.0.mode": "Bridge"}), f"{NET}.mode",
     "use one of: bridge, private, vepa, passthru"),
    ("missing-parent", _set(**{"defaults.parent": DELETE}), f"{NET}.parent",
     "set parent here, in [defaults] or on the host"),
    ("overlapping-subnets", _add_network(subnet="172.16.0.0/16"), "networks[1].subnet",
     "Docker refuses overlapping pools"),
    ("same-subnet-twice", _add_network(subnet="172.16.86.0/24"), "networks[1].subnet",
     "Docker refuses overlapping pools"),
    ("reserved-outside", _set(**{"networks.0.reserved": {"router": "10.0.0.1"}}),
     f"{NET}.reserved.router", "must lie inside it"),
    ("reserved-list-outside", _set(**{"networks.0.reserved": ["10.0.0.1"]}),
     f"{NET}.reserved.reserved1", "must lie inside it"),
    ("reserved-not-address", _set(**{"networks.0.reserved": {"router": "r1"}}),
     f"{NET}.reserved.router", "write it like 172.16.86.1"),
    ("reserved-bad-name", _set(**{"networks.0.reserved": {"a b": "172.16.86.9"}}),
     f"{NET}.reserved.a b", "use letters, digits"),
    ("reserved-not-table", _set(**{"networks.0.reserved": "172.16.86.9"}), f"{NET}.reserved",
     'reserved = { router = "172.16.86.254" }'),
    ("range-size-33", _set(**{"networks.0.range_size": "/33"}), f"{NET}.range_size",
     'use a prefix such as "/26"'),
    ("range-size-31", _set(**{"networks.0.range_size": "/31"}), f"{NET}.range_size",
     'use a prefix such as "/26"'),
    ("range-size-no-slash", _set(**{"networks.0.range_size": "26"}), f"{NET}.range_size",
     'use a prefix such as "/26"'),
    ("range-size-zero", _set(**{"networks.0.range_size": 0}), f"{NET}.range_size",
     "a number of addresses per host such as 64"),
    ("range-size-one-address", _set(**{"networks.0.range_size": 1}), f"{NET}.range_size",
     "a number of addresses per host such as 64"),
    ("range-size-float", _set(**{"networks.0.range_size": 64.0}), f"{NET}.range_size",
     'use a prefix such as "/26"'),
    ("range-size-bool", _set(**{"networks.0.range_size": True}), f"{NET}.range_size",
     'use a prefix such as "/26"'),
    ("range-size-non-ascii-digits", _set(**{"networks.0.range_size": "/\u0662\u0666"}),
     f"{NET}.range_size", 'use a prefix such as "/26"'),
    ("range-size-not-smaller", _set(**{"networks.0.range_size": "/24"}), f"{NET}.range_size",
     "use a prefix longer than /24"),
    ("range-size-too-many-addresses", _set(**{"networks.0.range_size": 512}),
     f"{NET}.range_size", "use a prefix longer than /24"),
    ("no-hosts", _set(hosts=[]), "hosts", "at least one [[hosts]] table is needed"),
    ("hosts-not-list", _set(hosts={"name": "h"}), "hosts",
     "at least one [[hosts]] table is needed"),
    ("host-not-table", _set(**{"hosts.1": "host2"}), "hosts[1]", "must be a table"),
    ("host-missing-name", _set(**{"hosts.0.name": DELETE}), "hosts[0].name",
     "every host needs a name and an address"),
    ("host-missing-address", _set(**{"hosts.0.address": DELETE}), "hosts[0].address",
     "every host needs a name and an address"),
    ("no-networks", _set(networks=DELETE), "networks",
     "at least one [[networks]] table is needed"),
    ("network-missing-subnet", _set(**{"networks.0.subnet": DELETE}), f"{NET}.subnet",
     "every network needs a name and a subnet"),
    ("network-missing-name", _set(**{"networks.0.name": DELETE}), f"{NET}.name",
     "every network needs a name and a subnet"),
    ("port-zero", _set(**{"hosts.0.port": 0}), "hosts[0].port", "from 1 to 65535"),
    ("port-too-big", _set(**{"defaults.port": 65536}), "defaults.port", "from 1 to 65535"),
    ("port-string", _set(**{"hosts.0.port": "22"}), "hosts[0].port", "from 1 to 65535"),
    ("port-bool", _set(**{"hosts.0.port": True}), "hosts[0].port", "from 1 to 65535"),
    ("identity-empty", _set(**{"hosts.0.identity_file": ""}), "hosts[0].identity_file",
     "write one like ~/.ssh/id_ed25519"),
    ("identity-not-string", _set(**{"defaults.identity_file": 5}), "defaults.identity_file",
     "write one like ~/.ssh/id_ed25519"),
    ("identity-unknown-user", _set(**{"hosts.0.identity_file": "~no_such_user_orch/key"}),
     "hosts[0].identity_file", "write the full path"),
    ("known-hosts-newline", _set(**{"ssh.known_hosts": "a\nb"}), "ssh.known_hosts",
     "write one like ~/.ssh/id_ed25519"),
    ("connect-timeout-zero", _set(**{"ssh.connect_timeout": 0}), "ssh.connect_timeout",
     "use a number in (0, 600]"),
    ("command-timeout-too-big", _set(**{"ssh.command_timeout": 3601}), "ssh.command_timeout",
     "use a number in (0, 3600]"),
    ("ssh-not-table", _set(ssh="x"), "ssh", "must be a table"),
    ("defaults-not-table", _set(defaults=["x"]), "defaults", "must be a table"),
    ("verify-count-zero", _set(**{"verify.count": 0}), "verify.count",
     "use a whole number 1-100"),
    ("verify-count-float", _set(**{"verify.count": 2.5}), "verify.count",
     "use a whole number 1-100"),
    ("verify-interval-negative", _set(**{"verify.interval": -1}), "verify.interval",
     "use a number in (0, 10]"),
    ("verify-timeout-nan", _set(**{"verify.timeout": float("nan")}), "verify.timeout",
     "is not a whole number of seconds from 1 to 60"),
    ("verify-image-upper", _set(**{"verify.image": "Orch-Probe"}), "verify.image",
     "use a name such as orch-probe:latest"),
    ("second-host-bad-address", _add_host(name="host3", address="10.0.0.1 "),
     "hosts[2].address", "e.g. 192.168.56.101"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "field", "fix"),
    [pytest.param(m, f, x, id=i) for i, m, f, x in PROBLEMS],
)
def test_each_problem_names_the_field_and_a_fix(mutate: Mutation, field: str, fix: str) -> None:
    data = doc()
    mutate(data)
    problems = problems_of(data)
    hits = lines_for(problems, field)
    assert hits, f"no problem for {field}: {problems}"
    assert any(fix in line for line in hits), hits


def test_missing_parent_is_reported_for_every_host_without_one() -> None:
    problems = problems_of(doc(**{"defaults.parent": DELETE, "hosts.1.parent": "eth1"}))
    assert problems == [
        "hosts.toml: networks[0].parent: no parent NIC for host 'host1'; set parent here, "
        "in [defaults] or on the host"
    ]


def test_all_problems_are_reported_in_one_error() -> None:
    data = doc(
        **{
            "networks.0.subnet": "172.16.86.5/24",
            "networks.0.mode": "vlan",
            "hosts.0.user": "$(id)",
            "hosts.1.name": "host1",
            "verify.count": 0,
            "sshh": {},
        }
    )
    problems = problems_of(data)
    fields = [line.split(": ")[1] for line in problems]
    for field in (
        "networks[0].subnet",
        "networks[0].mode",
        "hosts[0].user",
        "hosts[1].name",
        "verify.count",
        "sshh",
    ):
        assert field in fields, problems
    assert len(problems) == 6, problems


def test_a_control_character_in_a_key_stays_on_one_line() -> None:
    data = doc(**{"networks.0.ranges": {"evil\nhost": "172.16.86.64/26"}})
    data["bad\nkey\r"] = 1
    problems = problems_of(data)
    assert any(line.startswith("hosts.toml: bad\\nkey\\r: unknown key") for line in problems)
    assert any("networks[0].ranges.evil\\nhost: " in line for line in problems)


# --- hostile values never pass -------------------------------------------------------------------

HOSTILE = [
    "$(touch /tmp/x)",
    "`touch /tmp/x`",
    "a;touch /tmp/x",
    "a\ntouch /tmp/x",
    "a\rb",
    "a\tb",
    "a\x00b",
    "-oProxyCommand=x",
    "-x",
    "h\u00f4st",
    "a b",
    "a|b",
    "a&b",
    "a>b",
    "'a'",
    '"a"',
    "$HOME",
    "a\\b",
    "a*",
    "~root",
    "",
]
# (where to put the value, the field path that must be named)
STRING_FIELDS = [
    ("hosts.0.name", "hosts[0].name"),
    ("hosts.0.address", "hosts[0].address"),
    ("hosts.0.user", "hosts[0].user"),
    ("defaults.user", "defaults.user"),
    ("hosts.0.parent", "hosts[0].parent"),
    ("defaults.parent", "defaults.parent"),
    ("networks.0.parent", "networks[0].parent"),
    ("networks.0.name", "networks[0].name"),
    ("verify.image", "verify.image"),
]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
@pytest.mark.parametrize(("setter", "field"), STRING_FIELDS, ids=[f for f, _ in STRING_FIELDS])
def test_hostile_values_are_rejected_with_the_field_named(
    setter: str, field: str, value: str
) -> None:
    problems = problems_of(doc(**{setter: value}))
    assert lines_for(problems, field), problems


@pytest.mark.parametrize(
    "address",
    [
        "fe80::1%a;b",
        "fe80::1%`id`",
        "fe80::1%a\nb",
        "fe80::1%-x",
        "fe80::1%h\u00f4st",
        "fe80::1%eth0 x",
        "fe80::1%" + "e" * 16,
        "192.168.56.101%eth0",
    ],
    ids=repr,
)
def test_hostile_ipv6_scope_ids_are_rejected(address: str) -> None:
    problems = problems_of(doc(**{"hosts.0.address": address}))
    assert lines_for(problems, "hosts[0].address"), problems


@pytest.mark.parametrize("value", ["$(x)", "a;b", "a\nb", "-x", "h\u00f4st"], ids=repr)
def test_hostile_reserved_names_and_range_hosts_are_rejected(value: str) -> None:
    data = doc(
        **{
            "networks.0.reserved": {value: "172.16.86.9"},
            "networks.0.ranges": {value: "172.16.86.64/26"},
        }
    )
    problems = problems_of(data)
    assert any(line.startswith("hosts.toml: networks[0].reserved.") for line in problems)
    assert any(line.startswith("hosts.toml: networks[0].ranges.") for line in problems)


# --- files that cannot be read -------------------------------------------------------------------


def _load_error(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert info.value.exit_code == ExitCode.INVENTORY
    problems = info.value.problems
    assert len(problems) == 1, problems
    assert len(problems[0].splitlines()) == 1, problems
    return problems


def test_missing_file(tmp_path: Path) -> None:
    (line,) = _load_error(tmp_path / "nope.toml")
    assert "nope.toml: no such file" in line
    assert "pass -i FILE" in line


def test_a_directory_cannot_be_read(tmp_path: Path) -> None:
    (line,) = _load_error(tmp_path)
    assert "cannot read" in line


@pytest.mark.parametrize(
    "text",
    [
        "[[hosts]\nname = 'a'\n",
        "name = \n",
        "a = 1\na = 2\n",
        'a = "unterminated\n',
        "[hosts]\n[[hosts]]\n",
        "\ufeffa = 1\n",
    ],
    ids=repr,
)
def test_invalid_toml_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(text, encoding="utf-8")
    (line,) = _load_error(path)
    assert line.startswith("hosts.toml: not valid TOML: ")


def test_too_many_digits_is_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text("port = " + "1" * 5000 + "\n", encoding="utf-8")
    (line,) = _load_error(path)
    assert line.startswith("hosts.toml: not valid TOML: ")


@pytest.mark.parametrize("opener", ["[", "{a="], ids=["arrays", "inline-tables"])
def test_deep_nesting_is_invalid_toml(tmp_path: Path, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    path = tmp_path / "hosts.toml"
    path.write_text("x = " + opener * 3000 + "1" + closer * 3000 + "\n", encoding="utf-8")
    (line,) = _load_error(path)
    assert line.startswith("hosts.toml: not valid TOML: ")


@pytest.mark.parametrize(
    "data", [b"\xff\xfe\x00a", b"name = '\xe9'\n", b"\x80"], ids=["utf16-bom", "latin1", "cont"]
)
def test_non_utf8_is_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "hosts.toml"
    path.write_bytes(data)
    (line,) = _load_error(path)
    assert line == "hosts.toml: not UTF-8 text; save it as UTF-8"


def test_validation_problems_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8").replace("enp0s9", "en p0s9"), "utf-8")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert info.value.problems == [
        "lab.toml: defaults.parent: 'en p0s9' is not a valid interface name; use 1-15 letters, "
        "digits, '.', '_' or '-' (e.g. enp0s9 or enp0s9.10)"
    ]


# --- Inventory helpers ---------------------------------------------------------------------------


def test_select_and_host() -> None:
    inv = parse(doc())
    assert inv.select(None) is inv
    assert inv.select([]) is inv
    only = inv.select(["host2"])
    assert [h.name for h in only.hosts] == ["host2"]
    assert only.networks == inv.networks
    assert [h.name for h in inv.select(["host2", "host1"]).hosts] == ["host1", "host2"]
    assert inv.host("host1").address == "192.168.56.101"
    with pytest.raises(KeyError):
        inv.host("host3")


def test_select_with_an_unknown_name_raises_key_error() -> None:
    inv = parse(doc())
    with pytest.raises(KeyError) as info:
        inv.select(["host1", "nope", "other"])
    assert info.value.args == ("nope",)


def _minimal(**extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "defaults": {"parent": "enp0s9"},
        "hosts": [{"name": "host1", "address": "192.0.2.1"}],
        "networks": [{"name": "mac_net1", "subnet": "172.16.86.0/24"}],
    }
    doc.update(extra)
    return doc


@pytest.mark.parametrize(
    ("extra", "where", "words"),
    [
        ({"verify": {"timeout": 0.5}}, "verify.timeout", "whole number of seconds"),
        ({"ssh": {"connect_timeout": 0.5}}, "ssh.connect_timeout", "at least 1"),
        ({"ssh": {"command_timeout": 0.2}}, "ssh.command_timeout", "at least 1"),
        (
            {"verify": {"count": 100, "interval": 1}, "ssh": {"command_timeout": 60}},
            "verify.count",
            "longer than ssh.command_timeout",
        ),
    ],
)
def test_timeouts_that_could_not_work_are_refused(
    extra: dict[str, object], where: str, words: str
) -> None:
    with pytest.raises(InventoryError) as err:
        parse_inventory(_minimal(**extra), Path("hosts.toml"))
    assert len(err.value.problems) == 1
    assert f"hosts.toml: {where}: " in err.value.problems[0] and words in err.value.problems[0]
