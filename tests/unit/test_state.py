"""Observation: the one-round-trip script and the parsing of its output into a HostState."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from orchestrator.model import LABEL_MANAGED, LABEL_PROMISC_BEFORE, LABEL_RANGE
from orchestrator.state import (
    MARK,
    AttachedContainer,
    labels_for,
    observe_script,
    parse_links,
    parse_network,
    parse_observation,
    promisc_nic,
)
from tests.unit.fakebin import fake_bin

SECTIONS = ("user", "sudo", "links", "docker", "networks", "end")

# `ip -j -d link show` of a VirtualBox guest: lo, the management NIC, the macvlan parent (up,
# promiscuous), a VLAN sub-interface of it, a veth of a container and a down dummy.
LINKS: list[dict[str, Any]] = [
    {
        "ifindex": 1,
        "ifname": "lo",
        "flags": ["LOOPBACK", "UP", "LOWER_UP"],
        "mtu": 65536,
        "qdisc": "noqueue",
        "operstate": "UNKNOWN",
        "linkmode": "DEFAULT",
        "group": "default",
        "txqlen": 1000,
        "link_type": "loopback",
        "address": "00:00:00:00:00:00",
        "broadcast": "00:00:00:00:00:00",
        "promiscuity": 0,
        "min_mtu": 0,
        "max_mtu": 0,
        "inet6_addr_gen_mode": "eui64",
        "num_tx_queues": 1,
        "num_rx_queues": 1,
        "gso_max_size": 65536,
        "gso_max_segs": 65535,
    },
    {
        "ifindex": 2,
        "ifname": "enp0s8",
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "mtu": 1500,
        "qdisc": "fq_codel",
        "operstate": "UP",
        "linkmode": "DEFAULT",
        "group": "default",
        "txqlen": 1000,
        "link_type": "ether",
        "address": "08:00:27:3b:aa:01",
        "broadcast": "ff:ff:ff:ff:ff:ff",
        "promiscuity": 0,
        "min_mtu": 46,
        "max_mtu": 16110,
        "inet6_addr_gen_mode": "eui64",
        "num_tx_queues": 1,
        "num_rx_queues": 1,
        "parentbus": "pci",
        "parentdev": "0000:00:08.0",
    },
    {
        "ifindex": 3,
        "ifname": "enp0s9",
        "flags": ["BROADCAST", "MULTICAST", "PROMISC", "UP", "LOWER_UP"],
        "mtu": 1500,
        "qdisc": "fq_codel",
        "operstate": "UP",
        "linkmode": "DEFAULT",
        "group": "default",
        "txqlen": 1000,
        "link_type": "ether",
        "address": "08:00:27:3b:aa:02",
        "broadcast": "ff:ff:ff:ff:ff:ff",
        "promiscuity": 1,
        "min_mtu": 46,
        "max_mtu": 16110,
        "inet6_addr_gen_mode": "eui64",
        "num_tx_queues": 1,
        "num_rx_queues": 1,
        "parentbus": "pci",
        "parentdev": "0000:00:09.0",
    },
    {
        "ifindex": 4,
        "link": "enp0s9",
        "ifname": "enp0s9.10",
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "mtu": 1500,
        "qdisc": "noqueue",
        "operstate": "UP",
        "link_type": "ether",
        "address": "08:00:27:3b:aa:02",
        "promiscuity": 0,
        "linkinfo": {
            "info_kind": "vlan",
            "info_data": {"protocol": "802.1Q", "id": 10, "flags": ["REORDER_HDR"]},
        },
    },
    {
        "ifindex": 7,
        "link_index": 6,
        "ifname": "veth1a2b3c4",
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "mtu": 1500,
        "qdisc": "noqueue",
        "master": "docker0",
        "operstate": "UP",
        "link_type": "ether",
        "address": "7a:11:22:33:44:55",
        "link_netnsid": 0,
        "promiscuity": 1,
        "linkinfo": {
            "info_kind": "veth",
            "info_slave_kind": "bridge",
            "info_slave_data": {"state": "forwarding", "priority": 32},
        },
    },
    {
        "ifindex": 8,
        "ifname": "dummy0",
        "flags": ["BROADCAST", "NOARP"],
        "mtu": 1500,
        "qdisc": "noop",
        "operstate": "DOWN",
        "link_type": "ether",
        "address": "ae:10:20:30:40:50",
        "promiscuity": 0,
        "linkinfo": {"info_kind": "dummy"},
    },
    {
        "ifindex": 9,
        "ifname": "enp0s10",
        "flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"],
        "mtu": 1500,
        "qdisc": "fq_codel",
        "operstate": "DOWN",
        "link_type": "ether",
        "address": "08:00:27:3b:aa:03",
        "promiscuity": 0,
    },
]

WEB_ID = "9c1f0e4b7a2d" + "5" * 52
PROBE_ID = "1d2e3f4a5b6c" + "7" * 52
NONAME_ID = "abcdef012345" + "9" * 52

# `docker network inspect --format '{{json .}}' mac_net1` of a network orch made (Docker 26).
MANAGED_NET: dict[str, Any] = {
    "Name": "mac_net1",
    "Id": "3f2a7c9e1b0d" + "0" * 52,
    "Created": "2024-05-01T10:00:00.123456789Z",
    "Scope": "local",
    "Driver": "macvlan",
    "EnableIPv6": False,
    "IPAM": {
        "Driver": "default",
        "Options": {},
        "Config": [
            {
                "Subnet": "172.16.86.0/24",
                "IPRange": "172.16.86.0/26",
                "Gateway": "172.16.86.1",
                "AuxiliaryAddresses": {"router": "172.16.86.254"},
            }
        ],
    },
    "Internal": False,
    "Attachable": False,
    "Ingress": False,
    "ConfigFrom": {"Network": ""},
    "ConfigOnly": False,
    "Containers": {
        WEB_ID: {
            "Name": "web",
            "EndpointID": "e" * 64,
            "MacAddress": "02:42:ac:10:56:02",
            "IPv4Address": "172.16.86.2/24",
            "IPv6Address": "",
        },
        PROBE_ID: {
            "Name": "orch-probe-mac_net1-1a2b3c4d",
            "EndpointID": "f" * 64,
            "MacAddress": "02:42:ac:10:56:03",
            "IPv4Address": "172.16.86.3/24",
            "IPv6Address": "",
        },
    },
    "Options": {"macvlan_mode": "bridge", "parent": "enp0s9"},
    "Labels": {
        LABEL_MANAGED: "true",
        LABEL_RANGE: "172.16.86.0/26",
        LABEL_PROMISC_BEFORE: "off",
    },
}

# A macvlan network someone made by hand: dual stack (IPv6 config first), no labels, no range,
# no macvlan_mode option (Docker's default is bridge), a container without a name.
FOREIGN_NET: dict[str, Any] = {
    "Name": "lan",
    "Id": "77aa" + "1" * 60,
    "Scope": "local",
    "Driver": "macvlan",
    "EnableIPv6": True,
    "IPAM": {
        "Driver": "default",
        "Options": None,
        "Config": [
            {"Subnet": "fd00:86::/64", "Gateway": "fd00:86::1"},
            {"Subnet": "192.168.86.0/24", "Gateway": "192.168.86.1"},
        ],
    },
    "Containers": {
        NONAME_ID: {"Name": "", "IPv4Address": "192.168.86.20/24", "IPv6Address": ""},
    },
    "Options": {"parent": "enp0s10"},
    "Labels": None,
}


def observation(**sections: str | None) -> str:
    """The output of observe_script() on a healthy root host, with `sections` replaced.

    A value of None drops that section (and every later one stays unless also given).
    """
    parts: dict[str, str | None] = {
        "user": "root",
        "sudo": "root",
        "links": json.dumps(LINKS),
        "docker": "1.45",
        "networks": json.dumps(MANAGED_NET) + "\n" + json.dumps(FOREIGN_NET),
        "end": "",
    }
    parts.update(sections)
    lines = []
    for name, body in parts.items():
        if body is None:
            continue
        lines.append(f"{MARK}{name}")
        if body:
            lines.append(body)
    return "\n".join(lines) + "\n"


# --- links ---------------------------------------------------------------------------------------


def test_parse_links_reads_flags_and_kind() -> None:
    links = parse_links(json.dumps(LINKS))
    assert list(links) == [
        "lo",
        "enp0s8",
        "enp0s9",
        "enp0s9.10",
        "veth1a2b3c4",
        "dummy0",
        "enp0s10",
    ]
    parent = links["enp0s9"]
    assert (parent.up, parent.lower_up, parent.promisc, parent.kind) == (True, True, True, "")
    mgmt = links["enp0s8"]
    assert (mgmt.up, mgmt.lower_up, mgmt.promisc) == (True, True, False)
    assert links["enp0s9.10"].kind == "vlan"
    assert links["enp0s9.10"].promisc is False
    # promiscuity > 0 (a bridge port) is not the PROMISC flag orch sets
    assert links["veth1a2b3c4"].kind == "veth"
    assert links["veth1a2b3c4"].promisc is False
    dummy = links["dummy0"]
    assert (dummy.up, dummy.lower_up, dummy.promisc, dummy.kind) == (False, False, False, "dummy")
    no_carrier = links["enp0s10"]
    assert (no_carrier.up, no_carrier.lower_up) == (True, False)


@pytest.mark.parametrize(
    "text",
    [
        "",
        'Option "-j" is unknown, try "ip -help".',
        "sh: 1: ip: not found",
        json.dumps(LINKS)[:200],  # cut off mid-way
        '{"ifname": "eth0"}',  # not a list
    ],
)
def test_parse_links_without_json_is_empty(text: str) -> None:
    assert parse_links(text) == {}


def test_promisc_nic_of_vlan_subinterface() -> None:
    assert promisc_nic("enp0s9") == "enp0s9"
    assert promisc_nic("enp0s9.10") == "enp0s9"
    assert promisc_nic("bond0.100") == "bond0"


# --- networks ------------------------------------------------------------------------------------


def test_parse_network_managed_macvlan() -> None:
    net = parse_network(MANAGED_NET)
    assert net.name == "mac_net1"
    assert net.id == MANAGED_NET["Id"]
    assert net.driver == "macvlan"
    assert net.subnet == IPv4Network("172.16.86.0/24")
    assert net.gateway == IPv4Address("172.16.86.1")
    assert net.ip_range == IPv4Network("172.16.86.0/26")
    assert net.parent == "enp0s9"
    assert net.mode == "bridge"
    assert net.aux_addresses == {"router": "172.16.86.254"}
    assert net.managed is True
    assert net.promisc_before is False
    assert net.labels[LABEL_RANGE] == "172.16.86.0/26"
    assert net.containers == (
        AttachedContainer("orch-probe-mac_net1-1a2b3c4d", "172.16.86.3", orch_probe=True),
        AttachedContainer("web", "172.16.86.2", orch_probe=False),
    )
    assert [c.name for c in net.foreign_containers] == ["web"]


def test_parse_network_foreign_dual_stack() -> None:
    net = parse_network(FOREIGN_NET)
    assert net.subnet == IPv4Network("192.168.86.0/24")  # the IPv4 config, not the first one
    assert net.gateway == IPv4Address("192.168.86.1")
    assert net.ip_range is None
    assert net.parent == "enp0s10"
    assert net.mode == "bridge"  # Docker's default when macvlan_mode is not set
    assert net.labels == {}
    assert net.managed is False
    assert net.promisc_before is None
    assert net.aux_addresses == {}
    (container,) = net.containers
    assert container.name == NONAME_ID[:12]
    assert container.ipv4 == "192.168.86.20"
    assert net.foreign_containers == net.containers


def test_parse_network_promisc_before_on_and_other_modes() -> None:
    raw = json.loads(json.dumps(MANAGED_NET))
    raw["Labels"][LABEL_PROMISC_BEFORE] = "on"
    raw["Options"]["macvlan_mode"] = "private"
    raw["Options"]["parent"] = "enp0s9.10"
    net = parse_network(raw)
    assert net.promisc_before is True
    assert net.mode == "private"
    assert net.parent == "enp0s9.10"


def test_parse_network_minimal_and_garbage_values() -> None:
    net = parse_network({"Name": "x", "IPAM": {"Config": [{"Subnet": "not a net"}]}})
    assert (net.name, net.id, net.driver) == ("x", "", "")
    assert net.subnet is None and net.gateway is None and net.ip_range is None
    assert net.parent == "" and net.containers == ()
    empty = parse_network({})
    assert empty.name == "" and empty.subnet is None and not empty.managed


def test_labels_for_round_trips_through_parse_network() -> None:
    labels = labels_for(IPv4Network("172.16.86.64/26"), promisc_before=True)
    assert labels == {
        LABEL_MANAGED: "true",
        LABEL_RANGE: "172.16.86.64/26",
        LABEL_PROMISC_BEFORE: "on",
    }
    raw = dict(MANAGED_NET, Labels=labels)
    net = parse_network(raw)
    assert net.managed and net.promisc_before is True
    assert labels_for(IPv4Network("172.16.86.0/26"), False)[LABEL_PROMISC_BEFORE] == "off"


# --- the whole observation -----------------------------------------------------------------------


def test_parse_observation_of_a_healthy_host() -> None:
    state = parse_observation("host1", observation())
    assert state.host == "host1"
    assert state.user == "root"
    assert state.sudo == "root" and state.is_root
    assert state.docker_api == "1.45"
    assert state.docker_error == ""
    assert set(state.links) >= {"lo", "enp0s8", "enp0s9"}
    assert state.links["enp0s9"].promisc
    assert set(state.networks) == {"mac_net1", "lan"}
    assert state.networks["mac_net1"].ip_range == IPv4Network("172.16.86.0/26")


@pytest.mark.parametrize(
    ("sudo_out", "expected"),
    [
        ("root", "root"),
        ("yes", "yes"),
        ("no", "no"),
        ("", "no"),
        ("sudo: a terminal is required\nno", "no"),  # noise before the answer
        ("garbage", "no"),
    ],
)
def test_parse_observation_sudo(sudo_out: str, expected: str) -> None:
    state = parse_observation("h", observation(user="vagrant", sudo=sudo_out))
    assert state.user == "vagrant"
    assert state.sudo == expected
    assert state.is_root is (expected == "root")


@pytest.mark.parametrize(
    "error",
    [
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?",
        "permission denied while trying to connect to the Docker daemon socket at "
        "unix:///var/run/docker.sock: Get "
        '"http://%2Fvar%2Frun%2Fdocker.sock/v1.45/version": dial unix '
        "/var/run/docker.sock: connect: permission denied",
        "sh: 1: docker: not found",
    ],
)
def test_parse_observation_docker_down_keeps_the_error(error: str) -> None:
    # docker version may print an empty template line before the error
    state = parse_observation("h", observation(docker="\n" + error, networks=""))
    assert state.docker_api is None
    assert state.docker_error == error
    assert state.networks == {}


def test_parse_observation_docker_answer_with_noise_before_it() -> None:
    state = parse_observation("h", observation(docker="WARNING: bla\n1.41"))
    assert state.docker_api == "1.41"
    assert state.docker_error == ""


def test_parse_observation_empty_docker_section_says_no_answer() -> None:
    state = parse_observation("h", observation(docker=""))
    assert state.docker_api is None
    assert state.docker_error == "no answer"


def test_parse_observation_connection_dropped_after_links() -> None:
    text = observation(docker=None, networks=None, end=None)
    state = parse_observation("h", text)
    assert state.user == "root" and state.sudo == "root"
    assert "enp0s9" in state.links
    assert state.docker_api is None
    assert state.docker_error == "no answer"
    assert state.networks == {}


def test_parse_observation_connection_dropped_midway_through_links() -> None:
    text = f"{MARK}user\nvagrant\n{MARK}sudo\nyes\n{MARK}links\n" + json.dumps(LINKS)[:300]
    state = parse_observation("h", text)
    assert (state.user, state.sudo) == ("vagrant", "yes")
    assert state.links == {}
    assert state.docker_api is None


@pytest.mark.parametrize("text", ["", "Connection to host closed.\n", "garbage\nmore\n"])
def test_parse_observation_of_nothing_knows_nothing(text: str) -> None:
    state = parse_observation("h", text)
    assert state.user == ""
    assert state.sudo == "no"
    assert state.links == {}
    assert state.docker_api is None
    assert state.docker_error == "no answer"
    assert state.networks == {}


def test_parse_observation_skips_broken_network_lines() -> None:
    networks = "\n".join(
        [
            "Error: No such network: mac_net2",  # (stderr is discarded, but be safe)
            json.dumps(MANAGED_NET),
            '{"Name": "cut off',
            "  " + json.dumps(FOREIGN_NET),
        ]
    )
    state = parse_observation("h", observation(networks=networks))
    assert set(state.networks) == {"mac_net1", "lan"}


def test_parse_observation_ignores_text_before_the_first_marker() -> None:
    banner = "Welcome to Ubuntu 24.04 LTS\n * Documentation: https://help.ubuntu.com\n"
    state = parse_observation("h", banner + observation())
    assert state.user == "root"
    assert state.docker_api == "1.45"


# --- the script ----------------------------------------------------------------------------------


def test_observe_script_has_every_section_marker_in_order() -> None:
    script = observe_script(["mac_net1", "mac_net2"])
    positions = [script.index(f"echo {MARK}{name}") for name in SECTIONS]
    assert positions == sorted(positions)
    assert "ip -j -d link show" in script
    assert "docker network inspect --format '{{json .}}' mac_net1 mac_net2" in script
    assert "'{{.Server.APIVersion}}'" in script
    assert "sudo -n true" in script
    assert script.endswith(f"echo {MARK}end\n")


def test_observe_script_without_networks_skips_inspect() -> None:
    script = observe_script([])
    assert f"{MARK}networks" not in script
    assert "network inspect" not in script
    assert f"echo {MARK}end" in script


def test_observe_script_quotes_network_names() -> None:
    # The inventory forbids such names; the script quotes them anyway.
    hostile = ["a'b", "x; touch /tmp/pwned", "$(id)"]
    script = observe_script(hostile)
    for name in hostile:
        assert shlex.quote(name) in script
    inspect_line = next(line for line in script.splitlines() if "network inspect" in line)
    words = shlex.split(inspect_line.split("; ", 2)[2])
    assert words[:5] == ["docker", "network", "inspect", "--format", "{{json .}}"]
    assert words[5:8] == hostile


def test_observe_script_is_valid_sh() -> None:
    script = observe_script(["mac_net1", "a'b"])
    done = subprocess.run(
        ["sh", "-n", "-c", script], capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 0, done.stderr


FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_DIR/docker-$1.args"
case "$1" in
  version) echo 1.45 ;;
  network) cat "$FAKE_DIR/networks.jsonl" ;;
  ps) echo orch-probe-mac_net1-1a2b3c4d ;;
esac
"""


def test_observe_script_output_parses_end_to_end(tmp_path: Path) -> None:
    """Run the real script under sh with fake id/sudo/ip/docker: markers and quoting hold."""
    fake_bin(tmp_path, "id", '#!/bin/sh\ncase "$1" in -un) echo vagrant;; -u) echo 1000;; esac\n')
    fake_bin(tmp_path, "sudo", "#!/bin/sh\nexit 0\n")
    (tmp_path / "links.json").write_text(json.dumps(LINKS) + "\n")  # ip ends with a newline
    fake_bin(tmp_path, "ip", '#!/bin/sh\ncat "$FAKE_DIR/links.json"\n')
    (tmp_path / "networks.jsonl").write_text(json.dumps(MANAGED_NET) + "\n")
    fake_bin(tmp_path, "docker", FAKE_DOCKER)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path)}
    names = ["mac_net1", "a'b c"]
    done = subprocess.run(
        ["sh", "-c", observe_script(names)],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    state = parse_observation("host1", done.stdout)
    assert (state.user, state.sudo, state.docker_api) == ("vagrant", "yes", "1.45")
    assert state.links["enp0s9"].promisc
    assert set(state.networks) == {"mac_net1"}
    args = (tmp_path / "docker-network.args").read_text().splitlines()
    assert args == ["network", "inspect", "--format", "{{json .}}", *names]
