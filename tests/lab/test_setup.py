"""orch plan/setup/status/teardown against real lab hosts (issue 3), checked from outside orch:
the plain docker CLI over plain ssh, and `ip -d link` inside each host."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable

import pytest

from tests.lab.conftest import LabHandle


def inspect_over_ssh(lab: LabHandle, host: str, name: str = "mac_net1") -> dict[str, object]:
    out = lab.ssh(host, f"docker network inspect {name}")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]  # type: ignore[no-any-return]


def ipam(net: dict[str, object]) -> dict[str, str]:
    return net["IPAM"]["Config"][0]  # type: ignore[index,no-any-return]


def check_converged(lab: LabHandle, hosts: list[str]) -> dict[str, ipaddress.IPv4Network]:
    ranges = {}
    for host in hosts:
        net = inspect_over_ssh(lab, host)
        cfg = ipam(net)
        assert net["Driver"] == "macvlan"
        assert cfg["Subnet"] == "172.16.86.0/24" and cfg["Gateway"] == "172.16.86.1"
        assert net["Options"] == {"parent": "enp0s9", "macvlan_mode": "bridge"}
        assert net["Labels"]["io.orch.managed"] == "true"  # type: ignore[index]
        ranges[host] = ipaddress.ip_network(cfg["IPRange"])
        assert ranges[host].subnet_of(ipaddress.ip_network("172.16.86.0/24"))  # type: ignore[arg-type]
        link = lab.link(host)
        assert "PROMISC" in link["flags"] and "UP" in link["flags"]
    values = list(ranges.values())
    for i, a in enumerate(values):
        for b in values[i + 1 :]:
            assert not a.overlaps(b), ranges
    return ranges  # type: ignore[return-value]


@pytest.mark.parametrize("n,user", [(2, "orchlab"), (3, "root")])
def test_setup_converges_and_is_idempotent(
    lab_factory: Callable[..., LabHandle], n: int, user: str
) -> None:
    lab = lab_factory(n, user=user)
    plan = lab.orch("plan", "--json")
    assert plan.code == 0, plan
    actions = sorted((c["host"], c["action"]) for c in plan.json()["changes"])
    assert actions == sorted([(h, a) for h in lab.hosts for a in ("create_network", "set_promisc")])

    first = lab.orch("setup", "--json")
    assert first.code == 0, first
    assert first.json()["ok"] is True
    ranges = check_converged(lab, lab.hosts)
    ids = {h: inspect_over_ssh(lab, h)["Id"] for h in lab.hosts}

    # A container started by the plain docker CLI gets an address from its host's own range.
    for host in lab.hosts:
        run = lab.ssh(
            host, "docker run -d --rm --name plain --network mac_net1 orch-probe:latest sleep 60"
        )
        assert run.returncode == 0, run.stderr
        ip = lab.ssh(
            host, "docker inspect plain --format '{{.NetworkSettings.Networks.mac_net1.IPAddress}}'"
        ).stdout.strip()
        assert ipaddress.ip_address(ip) in ranges[host], (host, ip, ranges[host])
        lab.ssh(host, "docker rm -f plain")

    second = lab.orch("setup", "--json")
    assert second.code == 0, second
    assert second.json()["changes"] == []
    assert all(h["status"] == "unchanged" for h in second.json()["hosts"])
    assert {h: inspect_over_ssh(lab, h)["Id"] for h in lab.hosts} == ids

    status = lab.orch("status", "--json")
    assert status.code == 0, status
    for row in status.json()["hosts"]:
        assert row["nics"] == [{"name": "enp0s9", "up": True, "promisc": True}]
        assert row["networks"][0]["state"] == "in sync"
        assert row["networks"][0]["ip_range"] == str(ranges[row["host"]])

    down = lab.orch("teardown", "--json")
    assert down.code == 0, down
    for host in lab.hosts:
        assert lab.network(host) is None
        assert "PROMISC" not in lab.link(host)["flags"]
    again = lab.orch("teardown", "--json")
    assert again.code == 0 and again.json()["changes"] == []


def test_adding_a_host_keeps_existing_ranges(lab_factory: Callable[..., LabHandle]) -> None:
    lab = lab_factory(3)
    full = lab.inventory_text()
    two = re.sub(r'\[\[hosts\]\]\nname = "host3"\naddress = "[^"]+"\n', "", full)
    assert "host3" not in two
    inv2 = lab.write_inventory(two, "two.toml")
    assert lab.orch("setup", inventory=inv2).code == 0
    before = {h: inspect_over_ssh(lab, h) for h in ("host1", "host2")}
    res = lab.orch("setup", "--json")
    assert res.code == 0, res
    changes = res.json()["changes"]
    assert {c["host"] for c in changes} == {"host3"}
    after = check_converged(lab, lab.hosts)
    for host, net in before.items():
        assert inspect_over_ssh(lab, host)["Id"] == net["Id"]
        assert str(after[host]) == ipam(net)["IPRange"]
    lab.orch("teardown")


def test_drift_is_a_conflict_until_replace(clean_lab2: LabHandle) -> None:
    lab = clean_lab2
    made = lab.docker(
        "host2",
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.99.0.0/24",
        "-o",
        "parent=enp0s9",
        "mac_net1",
    )
    assert made.returncode == 0, made.stderr
    plan = lab.orch("plan", "--json")
    assert plan.code == 0, plan
    conflict = [c for c in plan.json()["changes"] if c["action"] == "conflict"]
    assert [(c["host"], c["target"]) for c in conflict] == [("host2", "mac_net1")]
    assert "subnet 10.99.0.0/24" in conflict[0]["reason"] and "--replace" in conflict[0]["reason"]

    setup = lab.orch("setup", "--json")
    assert setup.code == 1, setup
    hosts = {h["host"]: h for h in setup.json()["hosts"]}
    assert hosts["host2"]["status"] == "failed" and hosts["host1"]["status"] == "changed"
    assert "nothing changed on host2" in hosts["host2"]["error"]
    assert ipam(lab.network("host2") or {})["Subnet"] == "10.99.0.0/24"  # type: ignore[arg-type]
    assert "PROMISC" not in lab.link("host2")["flags"], "a blocked host must not be touched"

    table = lab.orch("setup")
    assert table.code == 1 and "CONFLICT" in table.stdout

    replaced = lab.orch("setup", "--replace", "--json")
    assert replaced.code == 0, replaced
    check_converged(lab, lab.hosts)


def test_teardown_only_touches_what_orch_made(clean_lab2: LabHandle) -> None:
    lab = clean_lab2
    lab.sh("host1", ["ip", "link", "set", "enp0s9", "promisc", "on"])  # the user's own setting
    assert lab.orch("setup").code == 0
    run = lab.docker(
        "host2",
        "run",
        "-d",
        "--name",
        "users",
        "--network",
        "mac_net1",
        "orch-probe:latest",
        "sleep",
        "60",
    )
    assert run.returncode == 0, run.stderr
    refused = lab.orch("teardown", "--json")
    assert refused.code == 1, refused
    hosts = {h["host"]: h for h in refused.json()["hosts"]}
    assert "users" in hosts["host2"]["error"] and "--force" in hosts["host2"]["error"]
    assert lab.network("host2") is not None and lab.network("host1") is None
    assert "PROMISC" in lab.link("host1")["flags"], "promisc was on before orch: stays on"
    forced = lab.orch("teardown", "--force")
    assert forced.code == 0, forced
    assert lab.network("host2") is None
    assert "PROMISC" not in lab.link("host2")["flags"]
    # A network of the same name that orch did not make is never removed.
    lab.docker(
        "host1",
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "172.16.86.0/24",
        "-o",
        "parent=enp0s9",
        "mac_net1",
    )
    left = lab.orch("teardown", "--json")
    assert left.code == 0 and lab.network("host1") is not None


def test_host_subset(clean_lab2: LabHandle) -> None:
    lab = clean_lab2
    res = lab.orch("setup", "--host", "host2", "--json")
    assert res.code == 0, res
    assert {c["host"] for c in res.json()["changes"]} == {"host2"}
    assert lab.network("host1") is None and lab.network("host2") is not None
    # host2 got the slice it would have had with everyone: 64/26, not host1's 0/26.
    assert ipam(lab.network("host2") or {})["IPRange"] == "172.16.86.64/26"  # type: ignore[arg-type]
    assert lab.orch("setup").code == 0
    check_converged(lab, lab.hosts)
    assert lab.orch("teardown", "-H", "host1").code == 0
    assert lab.network("host1") is None and lab.network("host2") is not None


def test_non_root_user_without_sudo_gets_a_clear_error(
    lab_factory: Callable[..., LabHandle],
) -> None:
    lab = lab_factory(2, user="orchnosudo", sudo=False)
    res = lab.orch("setup")
    assert res.code == 1, res
    assert "Traceback" not in res.stderr + res.stdout
    for host in lab.hosts:
        assert re.search(rf"{host}.*orchnosudo.*sudo", res.stdout), res.stdout
        assert lab.network(host) is None, "nothing half-made"
        assert "PROMISC" not in lab.link(host)["flags"]
    # Once the NIC is promiscuous (an admin did it), the same user can create the networks.
    for host in lab.hosts:
        lab.sh(host, ["ip", "link", "set", "enp0s9", "promisc", "on"])
    ok = lab.orch("setup")
    assert ok.code == 0, ok
    check_converged(lab, lab.hosts)
