"""The namespace lab itself (issue 2): real sshd and dockerd per host, checked from outside orch."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.lab.conftest import LabHandle, lab_leftovers, run_orch


@pytest.mark.parametrize("n", [2, 3])
def test_lab_hosts_are_real_and_separate(lab_factory: Callable[..., LabHandle], n: int) -> None:
    lab = lab_factory(n)
    roots, macs = set(), set()
    for host in lab.hosts:
        # Strict host-key checking against the lab's known_hosts, with no prompt.
        out = lab.ssh(
            host,
            "hostname; docker info --format '{{.DockerRootDir}}'; "
            "docker image inspect orch-probe:latest --format '{{.Id}}'",
        )
        assert out.returncode == 0, out.stderr
        name, root, image = out.stdout.split()
        assert name == host
        assert root.endswith(f"/{lab.name}/h{host.removeprefix('host')}")
        assert image.startswith("sha256:")
        roots.add(root)
        link = lab.link(host, "enp0s9")
        assert link["ifname"] == "enp0s9" and "PROMISC" not in link["flags"]
        assert "UP" in link["flags"]
        macs.add(link["address"])
        mgmt = lab.sh(host, ["ip", "-j", "addr", "show", "dev", "enp0s8"])
        assert lab.address(host) in mgmt.stdout
    assert len(roots) == n, "every host must have an engine of its own"
    assert len(macs) == n, "every host must have its own enp0s9"
    status = run_orch("lab", "status", "--json", *lab.lab_args())
    assert status.code == 0, status
    rows = status.json()["hosts"]
    assert [r["name"] for r in rows] == lab.hosts
    assert all(r["sshd_alive"] and r["dockerd_alive"] and r["netns_present"] for r in rows)


def test_lab_up_is_idempotent_and_down_leaves_nothing(
    lab_factory: Callable[..., LabHandle],
) -> None:
    lab = lab_factory(2)
    before = json.loads((lab.state_dir / "lab.json").read_text())
    again = run_orch("lab", "up", "--hosts", "2", "--subnet", lab.subnet, *lab.lab_args())
    assert again.code == 0, again
    after = json.loads((lab.state_dir / "lab.json").read_text())
    assert [h["sshd_pid"] for h in after["hosts"]] == [h["sshd_pid"] for h in before["hosts"]]
    assert [h["dockerd_pid"] for h in after["hosts"]] == [h["dockerd_pid"] for h in before["hosts"]]
    pids = [h[k] for h in after["hosts"] for k in ("sshd_pid", "dockerd_pid")]
    down = run_orch("lab", "down", *lab.lab_args())
    assert down.code == 0, down
    assert lab_leftovers(lab.name) == []
    from orchestrator.lab.core import pid_alive

    assert not any(pid_alive(p) for p in pids)
    assert not lab.inventory.exists()
    status = run_orch("lab", "status", *lab.lab_args())
    assert status.code == 1 and "not up" in status.stdout


def test_lab_refuses_a_subnet_in_use(lab_factory: Callable[..., LabHandle]) -> None:
    lab = lab_factory(1)
    other = run_orch(
        "lab",
        "up",
        "--hosts",
        "1",
        "--name",
        "tclash",
        "--state-dir",
        str(lab.state_dir / "other"),
        "--subnet",
        lab.subnet,
    )
    assert other.code == 5, other
    assert "overlaps" in other.stderr and "--subnet" in other.stderr
    assert lab_leftovers("tclash") == []
