"""`orch verify` (issue "orch verify") against real namespace labs: the matrix of every ordered
pair, the failing cells and hints when one thing breaks on one host, probe cleanup (also on
Ctrl-C and after --keep; a good run ends its probes without a kill), JUnit output, --probe-tar,
and the wall time of setup + verify.

Checks go around orch where they can: the plain docker CLI on each host's engine for ranges,
probes and images.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import LabHandle, Run, orch_argv, run_orch

NET = "mac_net1"
PROBE_IMAGE = "orch-probe:latest"


# ------------------------------------------------------------------------------ helpers
def probes_left(lab: LabHandle, hosts: list[str] | None = None) -> dict[str, list[str]]:
    """host -> names of orch probe containers on its engine (hosts with none are left out)."""
    left = {}
    for host in hosts or lab.hosts:
        out = lab.docker(
            host, "ps", "-a", "--filter", "label=io.orch.probe", "--format", "{{.Names}}"
        )
        assert out.returncode == 0, out.stderr
        if out.stdout.split():
            left[host] = out.stdout.split()
    return left


def ip_range(lab: LabHandle, host: str) -> ipaddress.IPv4Network:
    net = lab.network(host)
    assert net is not None, f"{NET} missing on {host}"
    return ipaddress.IPv4Network(net["IPAM"]["Config"][0]["IPRange"])


def matrix_of(run: Run) -> dict[str, Any]:
    data = run.json()
    assert [n["name"] for n in data["networks"]] == [NET], run
    return data["networks"][0]  # type: ignore[no-any-return]


def assert_green(lab: LabHandle, run: Run) -> None:
    """Exit 0 and every ordered pair ok, with loss 0, an RTT, and addresses in each host's range."""
    assert run.code == 0, run
    data = run.json()
    assert data["ok"] is True, run
    net = matrix_of(run)
    n = len(lab.hosts)
    pairs = {(p["from"], p["to"]): p for p in net["pairs"]}
    assert len(net["pairs"]) == len(pairs) == n * (n - 1), run
    assert set(pairs) == {(a, b) for a in lab.hosts for b in lab.hosts if a != b}
    ranges = {h: ip_range(lab, h) for h in lab.hosts}
    for (src, dst), p in pairs.items():
        assert p["ok"] is True and p["loss"] == 0, p
        assert isinstance(p["rtt_ms"], int | float) and p["rtt_ms"] >= 0, p
        assert ipaddress.ip_address(p["from_ip"]) in ranges[src], (p, ranges[src])
        assert ipaddress.ip_address(p["to_ip"]) in ranges[dst], (p, ranges[dst])
    assert net["hints"] == [] and net["probe_errors"] == [], run
    assert probes_left(lab) == {}, "a good run must remove its probes"


def assert_cells_around(net: dict[str, Any], bad: str, hosts: list[str]) -> None:
    """Exactly the cells to and from `bad` fail (each with a reason); all others are ok."""
    n = len(hosts)
    assert len(net["pairs"]) == n * (n - 1)
    for p in net["pairs"]:
        involved = bad in (p["from"], p["to"])
        assert p["ok"] is (not involved), p
        if involved:
            assert p["reason"] and p["loss"] == 100, p
            assert p["rtt_ms"] is None, p
        else:
            assert p["loss"] == 0 and p["rtt_ms"] is not None, p


def table_rows(text: str, hosts: list[str]) -> dict[str, list[str]]:
    """The matrix of the table output: from-host -> its cells, split on 2+ spaces."""
    rows = {}
    for line in text.splitlines():
        words = re.split(r"\s{2,}", line.strip())
        if words and words[0] in hosts and len(words) == len(hosts) + 1:
            rows[words[0]] = words[1:]
    return rows


def assert_table_green(text: str, hosts: list[str]) -> None:
    """Rows = from, columns = to: "-" on the diagonal, "ok <rtt> ms" everywhere else."""
    rows = table_rows(text, hosts)
    assert list(rows) == hosts, text
    for src in hosts:
        for dst, cell in zip(hosts, rows[src], strict=True):
            if src == dst:
                assert cell == "-", text
            else:
                assert cell.startswith("ok ") and cell.endswith(" ms"), text


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def lab3(lab_factory: Callable[..., LabHandle]) -> Iterator[LabHandle]:
    """A 3-host lab, set up once, shared by this module's fault tests (each heals after itself)."""
    lab = lab_factory(3)
    setup = lab.orch("setup")
    assert setup.code == 0, setup
    yield lab
    lab.reset()


@pytest.fixture
def green_lab3(lab3: LabHandle) -> Iterator[LabHandle]:
    """lab3, converged before the test; after it, verify must be green again."""
    setup = lab3.orch("setup")
    assert setup.code == 0, setup
    yield lab3
    assert_green(lab3, lab3.orch("verify", "--json"))


# ------------------------------------------------------------------------------ green runs
def test_verify_two_hosts_json_and_table(clean_lab2: LabHandle) -> None:
    lab = clean_lab2
    setup = lab.orch("setup")
    assert setup.code == 0, setup
    run = lab.orch("verify", "--json")
    print(
        f"\n[timing] 2 hosts: setup {setup.seconds:.2f} s + verify {run.seconds:.2f} s "
        f"= {setup.seconds + run.seconds:.2f} s wall"
    )
    assert_green(lab, run)

    text = lab.orch("verify")
    assert text.code == 0, text
    assert f"network {NET}" in text.stdout
    assert_table_green(text.stdout, lab.hosts)
    assert "2/2 paths ok" in text.stdout, text.stdout
    assert "hint" not in text.stdout and "FAIL" not in text.stdout
    assert probes_left(lab) == {}


def test_verify_three_hosts_json_and_table(green_lab3: LabHandle) -> None:
    lab = green_lab3
    assert_green(lab, lab.orch("verify", "--json"))
    text = lab.orch("verify")
    assert text.code == 0, text
    assert_table_green(text.stdout, lab.hosts)
    assert "6/6 paths ok" in text.stdout, text.stdout


# ------------------------------------------------------------------------------ faults on host2
def _break_network(lab: LabHandle) -> None:
    out = lab.docker("host2", "network", "rm", NET)
    assert out.returncode == 0, out.stderr


def _heal_network(lab: LabHandle) -> None:
    setup = lab.orch("setup")
    assert setup.code == 0, setup


def _fault(kind: str) -> tuple[Callable[[LabHandle], None], Callable[[LabHandle], None]]:
    def on(lab: LabHandle) -> None:
        out = run_orch("lab", "fault", "host2", kind, *lab.lab_args())
        assert out.code == 0, out

    def off(lab: LabHandle) -> None:
        out = run_orch("lab", "heal", "host2", kind, *lab.lab_args())
        assert out.code == 0, out

    return on, off


FAULTS = {
    # (a) the network is gone on host2: its probe cannot start.
    "network-removed": (_break_network, _heal_network),
    # (b) host2's data NIC is DOWN: its probe starts, but no frame leaves or arrives.
    "data-down": _fault("data-down"),
    # (c) host2's dockerd is stopped: no probe, no observation of its networks.
    "docker-stop": _fault("docker-stop"),
    # (d) host2's switch port passes only frames for the NIC's own MAC ("Deny" in VirtualBox).
    "mac-filter": _fault("mac-filter"),
    # (e) host2's sshd is stopped: orch cannot reach host2 at all.
    "sshd-stop": _fault("sshd-stop"),
}


def _check_hint(kind: str, net: dict[str, Any]) -> None:
    hints = net["hints"]
    assert len(hints) == 1 and hints[0].startswith("host2: "), hints
    hint = hints[0]
    if kind == "network-removed":
        assert "missing" in hint and "orch setup" in hint, hint
        assert net["probe_errors"] == [{"host": "host2", "reason": f"network {NET} is missing"}]
    elif kind == "data-down":
        assert "enp0s9" in hint and "DOWN" in hint, hint
        assert net["probe_errors"] == [], "the probe starts on a DOWN parent"
    elif kind == "docker-stop":
        assert "Docker engine" in hint and "dockerd" in hint, hint
        assert hint.count("does not answer") == 1, f"repeated words: {hint}"
        assert [e["host"] for e in net["probe_errors"]] == ["host2"]
    elif kind == "mac-filter":
        assert '"Allow All"' in hint and "Promiscuous Mode" in hint, hint
        assert "missing" not in hint and "DOWN" not in hint, hint
        assert net["probe_errors"] == [], "the probe starts; its frames are dropped"
    elif kind == "sshd-stop":
        assert "could not reach" in hint and "dockerd" not in hint, hint
        assert [e["host"] for e in net["probe_errors"]] == ["host2"]


@pytest.mark.parametrize("kind", list(FAULTS))
def test_verify_one_fault_on_host2(green_lab3: LabHandle, kind: str, tmp_path: Path) -> None:
    lab = green_lab3
    brk, heal = FAULTS[kind]
    junit = tmp_path / "verify.xml"
    try:
        brk(lab)
        run = lab.orch("verify", "--json", "--junit", str(junit))
        assert run.code == 1, run
        assert "Traceback" not in run.stderr + run.stdout, run
        data = run.json()
        assert data["ok"] is False
        net = matrix_of(run)
        assert net["ok"] is False
        # Every cell to and from host2 fails, all others are ok. For mac-filter that includes
        # host2's own row, although host2's probe can send: its ARP request is a broadcast and
        # passes, but the ARP reply (and any echo reply) is unicast to the probe's MAC, which
        # is not the NIC's own MAC, so the filtered port drops it too. The column into host2
        # fails the other way round: ARP toward host2 resolves (the reply goes to the asker,
        # whose port is open), the echo requests to the probe's MAC are dropped; that is what
        # tells the hint to name the hypervisor setting.
        assert_cells_around(net, "host2", lab.hosts)
        _check_hint(kind, net)

        # JUnit: a test case per ordered pair, failures exactly for the broken ones.
        suite = ET.parse(junit).getroot().find("testsuite")
        assert suite is not None and suite.get("name") == NET
        cases = {c.get("name"): c for c in suite.iter("testcase")}
        pairs = {f"{a} -> {b}" for a in lab.hosts for b in lab.hosts if a != b}
        assert pairs <= set(cases), cases.keys()
        extra = set(cases) - pairs
        assert extra == ({"probe on host2"} if net["probe_errors"] else set()), extra
        for name in pairs:
            failed = cases[name].find("failure") is not None
            assert failed is ("host2" in name), name
        assert int(suite.get("failures", "-1")) == 4 + len(extra)

        # A failed run removes its probes too (host2's engine cannot be asked while stopped).
        askable = [h for h in lab.hosts if not (h == "host2" and kind == "docker-stop")]
        assert probes_left(lab, askable) == {}
    finally:
        heal(lab)
    # green_lab3 checks that verify is green again after the heal.


def test_verify_table_shows_failed_cells_and_hint(green_lab3: LabHandle) -> None:
    lab = green_lab3
    brk, heal = FAULTS["data-down"]
    try:
        brk(lab)
        run = lab.orch("verify")
    finally:
        heal(lab)
    assert run.code == 1, run
    rows = table_rows(run.stdout, lab.hosts)
    assert set(rows) == set(lab.hosts), run.stdout
    for i, src in enumerate(lab.hosts):
        for j, dst in enumerate(lab.hosts):
            cell = rows[src][j]
            if i == j:
                assert cell == "-"
            elif "host2" in (src, dst):
                assert cell == "FAIL 100%", run.stdout
            else:
                assert cell.startswith("ok "), run.stdout
    lines = run.stdout.splitlines()
    table_end = max(i for i, line in enumerate(lines) if line.startswith("host3"))
    hint = next(i for i, line in enumerate(lines) if line.strip().startswith("hint:"))
    assert hint > table_end, "the hint comes under the matrix"
    assert "host2: parent NIC enp0s9 is DOWN" in lines[hint]
    assert "2/6 paths ok; failed:" in run.stdout
    for pair in ("host1 -> host2", "host2 -> host1", "host2 -> host3", "host3 -> host2"):
        assert f"{NET}: {pair} (" in run.stdout, run.stdout


# ------------------------------------------------------------------------------ probe cleanup
def test_interrupted_verify_leaves_no_probe(green_lab3: LabHandle) -> None:
    lab = green_lab3
    proc = subprocess.Popen(
        [*orch_argv(), "-i", str(lab.inventory), "verify"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        seen: dict[str, list[str]] = {}
        while not seen and proc.poll() is None and time.monotonic() < deadline:
            seen = probes_left(lab)
            if not seen:
                time.sleep(0.02)
        assert seen, f"no probe seen before verify ended (exit {proc.poll()})"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, f"exit {proc.returncode}\n{out}\n{err}"
    assert "interrupted" in err and "Traceback" not in err, err
    assert probes_left(lab) == {}, f"probes seen while running: {seen}"


def test_good_run_ends_probes_by_their_last_line_and_observes_nothing(
    green_lab3: LabHandle,
) -> None:
    """A good run sends every probe its script and then one more line on the attach stream: each
    probe exits by itself (code 0) and is never killed; a kill (code 137) is for failures. It
    does not observe the hosts either: that is only for explaining failures (the fault tests)."""
    lab = green_lab3
    since = f"{time.time():.6f}"
    run = lab.orch("-v", "verify", "--json")
    until = f"{time.time() + 1:.6f}"
    assert_green(lab, run)
    assert "observed" not in run.stderr, run.stderr
    assert "probe orch-probe-" in run.stderr, run.stderr  # -v did log
    for host in lab.hosts:
        out = lab.docker(
            host, "events", "--since", since, "--until", until,
            "--filter", "label=io.orch.probe", "--format",
            '{{.Action}} {{index .Actor.Attributes "exitCode"}}',
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        actions = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
        assert "attach" in actions and "start" in actions, (host, out.stdout)
        assert "kill" not in actions, (host, out.stdout)
        assert "die 0" in out.stdout.splitlines(), (host, out.stdout)
        assert "destroy" in actions, (host, out.stdout)  # auto-removed


def test_probe_kept_by_keep_is_removed_by_next_run(green_lab3: LabHandle) -> None:
    lab = green_lab3
    try:
        kept = lab.orch("verify", "--keep", "--json")
        assert kept.code == 0, kept
        left = probes_left(lab)
        assert set(left) == set(lab.hosts) and all(len(v) == 1 for v in left.values()), left
        assert_green(lab, lab.orch("verify", "--json"))  # also: no probe remains anywhere
    finally:
        for host, names in probes_left(lab).items():
            lab.docker(host, "rm", "-f", *names)


# ------------------------------------------------------------------------------ --probe-tar
def test_probe_tar_loads_a_missing_image(clean_lab2: LabHandle) -> None:
    lab = clean_lab2
    tar = lab.state_dir / "probe-rootfs.tar"
    assert tar.is_file()
    setup = lab.orch("setup")
    assert setup.code == 0, setup
    gone = lab.docker("host2", "image", "rm", "-f", PROBE_IMAGE)
    assert gone.returncode == 0, gone.stderr
    try:
        run = lab.orch("verify")
        assert run.code == 1, run
        assert "--probe-tar" in run.stdout, run.stdout
        assert "Traceback" not in run.stdout + run.stderr
        assert "ARP unanswered" not in run.stdout, "no ping was tried: not a cabling problem"
        hints = [line.strip() for line in run.stdout.splitlines() if "hint:" in line]
        assert len(hints) == 1 and hints[0].startswith("hint: host2: "), hints
        assert "--probe-tar" in hints[0], hints
        assert probes_left(lab) == {}

        loaded = lab.orch("verify", "--json", "--probe-tar", str(tar))
        assert_green(lab, loaded)
        assert lab.docker("host2", "image", "inspect", PROBE_IMAGE).returncode == 0
    finally:
        if lab.docker("host2", "image", "inspect", PROBE_IMAGE).returncode != 0:
            subprocess.run(
                [
                    "docker",
                    "-H",
                    f"unix://{lab.lab.docker_sock(2)}",
                    "import",
                    str(tar),
                    PROBE_IMAGE,
                ],
                capture_output=True,
                timeout=60,
            )


# ------------------------------------------------------------------------------ 8 hosts
def test_verify_eight_hosts_wall_time(lab_factory: Callable[..., LabHandle]) -> None:
    """Setup + verify on 8 hosts: all 56 pairs ok; the times are printed, not asserted."""
    start = time.monotonic()
    lab = lab_factory(8)
    up = time.monotonic() - start
    try:
        setup = lab.orch("setup")
        assert setup.code == 0, setup
        run = lab.orch("verify", "--json")
        print(
            f"\n[timing] 8 hosts: lab up {up:.2f} s; setup {setup.seconds:.2f} s + verify "
            f"{run.seconds:.2f} s = {setup.seconds + run.seconds:.2f} s wall "
            f"(verify elapsed_s {run.json().get('elapsed_s')})"
        )
        assert_green(lab, run)
    finally:
        down = run_orch("lab", "down", *lab.lab_args(), timeout=180)
        assert down.code == 0, down
