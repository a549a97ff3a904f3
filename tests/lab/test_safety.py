"""Safety: host keys, hostile input, faults mid-run; nothing lost, nothing half-done.

Every case runs the real `orch` against a real namespace lab, with HOME pointed at an empty
directory (root's own ~/.ssh never counts), and checks around orch: the exact per-host report,
the exit code, the other host fully converged (`docker network inspect`, `ip -d link` inside the
host), nothing half-made on the failing host, and a rerun after healing that converges with no
manual cleanup. Each case's time-to-report is measured and printed at the end of the module.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.core import NETNS_DIR
from tests.lab.conftest import REPO, LabHandle, Run, orch_argv, run_orch

CONNECT_TIMEOUT = 5  # the lab inventory's [ssh] connect_timeout
SLACK = 5.0  # Python start-up, observation and reporting on top of a timeout (busy machine)
TIMES: dict[str, float] = {}  # case -> seconds until orch reported


def timed(case: str, seconds: float) -> None:
    TIMES[case] = seconds
    print(f"time-to-report {case}: {seconds:.2f} s")


@pytest.fixture(scope="module", autouse=True)
def _print_times(pytestconfig: pytest.Config) -> Iterator[None]:
    yield
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    lines = [f"  {case:<48} {s:6.2f} s" for case, s in TIMES.items()]
    with capman.global_and_fixture_disabled():  # type: ignore[union-attr]
        print("\ntime-to-report per case:\n" + "\n".join(lines))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME: no ~/.ssh/known_hosts, config or agent of root's can help or hurt."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def lab(clean_lab2: LabHandle, home: Path) -> Iterator[LabHandle]:
    yield clean_lab2
    assert not (home / ".ssh").exists(), "orch must never write ~/.ssh"


def env(home: Path, **extra: str) -> dict[str, str]:
    out = {"HOME": str(home)}
    out.update(extra)
    return out


def orch(lab: LabHandle, home: Path, *args: str, **kw: Any) -> Run:
    return lab.orch(*args, env=env(home, **kw.pop("extra_env", {})), **kw)


def by_host(res: Run) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in res.json()["hosts"]}


def actions(report: dict[str, Any]) -> list[str]:
    return [c["action"] for c in report["done"]]


def converged(lab: LabHandle, host: str) -> None:
    net = lab.network(host)
    assert net is not None, f"{host}: mac_net1 missing"
    assert net["Driver"] == "macvlan" and net["Labels"]["io.orch.managed"] == "true"
    assert net["IPAM"]["Config"][0]["Subnet"] == "172.16.86.0/24"
    assert net["Options"]["parent"] == "enp0s9"
    flags = lab.link(host)["flags"]
    assert "PROMISC" in flags and "UP" in flags, f"{host}: {flags}"
    count = lab.docker(host, "network", "ls", "-q", "--filter", "name=mac_net1").stdout.split()
    assert len(count) == 1, f"{host}: {count}"


def untouched(lab: LabHandle, host: str, docker_up: bool = True) -> None:
    assert "PROMISC" not in lab.link(host)["flags"], f"{host}: promisc was left on"
    if docker_up:
        assert lab.network(host) is None, f"{host}: a network was left behind"


def probes(lab: LabHandle, host: str) -> list[str]:
    out = lab.docker(host, "ps", "-a", "--filter", "label=io.orch.probe", "--format", "{{.Names}}")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def no_traceback(res: Run) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res


def fault(lab: LabHandle, host: str, kind: str, on: bool = True) -> None:
    res = run_orch("lab", "fault" if on else "heal", host, kind, *lab.lab_args(), timeout=60)
    assert res.code == 0, res


def fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[1]


def host_pub(lab: LabHandle, host: str) -> Path:
    return lab.lab.host_dir(lab.lab.host(host).index) / "ssh_host_ed25519_key.pub"


def sshd_pids(lab: LabHandle, host: str) -> list[int]:
    """sshd processes (listener and sessions) living in the host's network namespace."""
    target = os.stat(NETNS_DIR / lab.lab.host(host).netns).st_ino
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino != target:
                continue
            if (entry / "comm").read_text().strip().startswith("sshd"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def with_known_hosts(lab: LabHandle, path: Path, name: str) -> Path:
    text = lab.inventory_text().replace('known_hosts = "known_hosts"', f'known_hosts = "{path}"')
    assert str(path) in text
    return lab.write_inventory(text, name)


def _stopped(pid: int) -> bool:
    """True when the process is stopped (SIGSTOP), by /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "Tt"


class Interrupted:
    """`orch -v ARGS` run with Popen (through tests/lab/freeze.py); orch stops itself right after
    it logs a line that contains `marker`, `action` runs, and orch continues (SIGCONT): a
    deterministic point mid-run."""

    def __init__(
        self,
        lab: LabHandle,
        home: Path,
        args: list[str],
        marker: str,
        action: Callable[[int], None],
        inventory: Path | None = None,
    ) -> None:
        argv = [
            sys.executable, "-m", "tests.lab.freeze", marker,
            "-v", "-i", str(inventory or lab.inventory), *args,
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_COLOR": "1", "HOME": str(home)},
            cwd=REPO,
        )
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        head: list[str] = []
        self.hit = False
        resumed = started
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                head.append(line)
                if marker in line:
                    deadline = time.monotonic() + 10
                    while not _stopped(proc.pid):  # it stops itself just after the line
                        assert time.monotonic() < deadline, "orch did not stop at the marker"
                        time.sleep(0.001)
                    try:
                        action(proc.pid)
                    finally:
                        os.kill(proc.pid, signal.SIGCONT)
                    resumed = time.monotonic()
                    self.hit = True
                    break
            for line in proc.stderr:  # the rest, stamped with the time since orch resumed
                head.append(f"[+{time.monotonic() - resumed:.2f} s] {line}")
            out, err = proc.communicate(timeout=120)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.seconds = time.monotonic() - resumed  # from "carry on" to the report
        self.run = Run(argv, proc.returncode, out, "".join(head) + err, time.monotonic() - started)
        assert self.hit, f"never saw {marker!r}:\n{self.run}"


# ------------------------------------------------------------------------------- 1. host keys
def test_unknown_hosts_are_refused_until_trusted(
    lab: LabHandle, home: Path, tmp_path: Path
) -> None:
    own = tmp_path / "orch_known_hosts"
    own.write_text("")
    inv = with_known_hosts(lab, own, "unknown.toml")
    fps = {h: fingerprint(host_pub(lab, h)) for h in lab.hosts}

    refused = orch(lab, home, "setup", "--json", inventory=inv)
    timed("1 unknown host keys -> exit 4", refused.seconds)
    assert refused.code == 4, refused
    no_traceback(refused)
    assert refused.stdout == ""
    for host in lab.hosts:
        line = next(ln for ln in refused.stderr.splitlines() if ln.startswith(f"{host}: "))
        assert f"unknown SSH host key for {lab.address(host)}" in line, line
        assert f"ssh-ed25519 {fps[host]}" in line and "SHA256:" in line
        assert f"orch trust --host {host}" in line and str(own) in line
        untouched(lab, host)
    assert own.read_text() == ""

    trusted = orch(lab, home, "trust", inventory=inv)
    timed("1 orch trust", trusted.seconds)
    assert trusted.code == 0, trusted
    for host in lab.hosts:
        assert re.search(
            rf"^{host}\s+trusted\s+ssh-ed25519 {re.escape(fps[host])}$", trusted.stdout, re.M
        ), trusted.stdout
    recorded = sorted(ln.split()[0] for ln in own.read_text().splitlines())
    assert recorded == sorted(lab.address(h) for h in lab.hosts)
    assert not (home / ".ssh").exists(), "trust records in orch's file only"

    ok = orch(lab, home, "setup", "--json", inventory=inv)
    assert ok.code == 0, ok
    for host in lab.hosts:
        assert by_host(ok)[host]["status"] == "changed"
        converged(lab, host)

    # The Docker API rides on the one verified SSH connection: count TCP connections to each
    # host's sshd while a verify (probes = Docker API traffic) runs.
    peak: dict[str, int] = {}
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            out = subprocess.run(
                ["ss", "-Htn", "state", "established", "( dport = :22 )"],
                capture_output=True,
                text=True,
            ).stdout
            for host in lab.hosts:
                n = sum(1 for ln in out.splitlines() if f" {lab.address(host)}:22" in ln)
                peak[host] = max(peak.get(host, 0), n)
            time.sleep(0.02)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        verify = orch(lab, home, "verify", "--json", inventory=inv)
    finally:
        stop.set()
        counter.join()
    assert verify.code == 0, verify
    assert peak == {h: 1 for h in lab.hosts}, f"one SSH connection per host, saw {peak}"

    # --trust-new-hosts: trust on first use, recorded in orch's file only.
    assert orch(lab, home, "teardown", inventory=inv).code == 0
    own.write_text("")
    tofu = orch(lab, home, "setup", "--trust-new-hosts", "--json", inventory=inv)
    timed("1 setup --trust-new-hosts", tofu.seconds)
    assert tofu.code == 0, tofu
    for host in lab.hosts:
        assert f"{host}: trusted new host key ssh-ed25519 {fps[host]}" in tofu.stderr
        converged(lab, host)
    assert len(own.read_text().splitlines()) == 2
    again = orch(lab, home, "setup", "--json", inventory=inv)
    assert again.code == 0 and again.json()["changes"] == [], again
    assert "trusted new host key" not in again.stderr
    assert not (home / ".ssh").exists()


def test_changed_host_key_is_refused(lab: LabHandle, home: Path) -> None:
    old = fingerprint(host_pub(lab, "host2"))
    fault(lab, "host2", "rekey")
    try:
        new = fingerprint(host_pub(lab, "host2"))
        assert new != old
        res = orch(lab, home, "setup", "--json")
        timed("1 changed host key", res.seconds)
        assert res.code == 1, res
        reports = by_host(res)
        assert reports["host1"]["status"] == "changed"
        assert actions(reports["host1"]) == ["create_network", "set_promisc"]
        bad = reports["host2"]
        assert bad["status"] == "failed" and bad["done"] == [] and bad["rolled_back"] == []
        assert f"SSH host key of {lab.address('host2')} CHANGED" in bad["error"]
        assert f"known ssh-ed25519 {old}" in bad["error"]
        assert f"offered ssh-ed25519 {new}" in bad["error"]
        assert "nothing was done" in bad["error"]
        table = orch(lab, home, "setup")
        assert table.code == 1 and re.search(r"^host2\s+failed\s+.*CHANGED", table.stdout, re.M)
        converged(lab, "host1")
        untouched(lab, "host2")
    finally:
        fault(lab, "host2", "rekey", on=False)  # trusts the new key in the lab's known_hosts
    healed = orch(lab, home, "setup", "--json")
    assert healed.code == 0, healed
    assert by_host(healed)["host1"]["status"] == "unchanged"
    assert actions(by_host(healed)["host2"]) == ["create_network", "set_promisc"]
    converged(lab, "host2")


# ---------------------------------------------------------------------------- 2. sudo password
def test_sudo_password(lab_factory: Callable[..., LabHandle], home: Path) -> None:
    secret = "Orch-test-" + os.urandom(6).hex()
    pwlab = lab_factory(2, user="orchpw", sudo=False)
    sudoers = Path("/etc/sudoers.d/orch-test-pw")
    try:
        sudoers.write_text("orchpw ALL=(root) ALL\n")
        os.chmod(sudoers, 0o440)
        done = subprocess.run(["chpasswd"], input=f"orchpw:{secret}\n", text=True)
        assert done.returncode == 0

        without = orch(pwlab, home, "setup", "--json")
        timed("2 sudo needs a password, none given", without.seconds)
        assert without.code == 1, without
        no_traceback(without)
        for host, rep in by_host(without).items():
            assert rep["status"] == "failed" and rep["done"] == [], rep
            assert "user orchpw" in rep["error"] and "sudo" in rep["error"]
            assert "ORCH_SUDO_PASSWORD" in rep["error"]
            assert f"nothing changed on {host}" in rep["error"]
            untouched(pwlab, host)
        table = orch(pwlab, home, "setup")
        for host in pwlab.hosts:
            assert re.search(rf"^{host}\s+failed\s+.*orchpw.*sudo", table.stdout, re.M), table

        wrong = orch(pwlab, home, "setup", "--json", extra_env={"ORCH_SUDO_PASSWORD": "nope"})
        timed("2 wrong sudo password", wrong.seconds)
        assert wrong.code == 1, wrong
        for host, rep in by_host(wrong).items():
            assert "sudo did not accept the password" in rep["error"] and "orchpw" in rep["error"]
            untouched(pwlab, host)

        ok = orch(pwlab, home, "-v", "setup", "--json", extra_env={"ORCH_SUDO_PASSWORD": secret})
        timed("2 sudo with ORCH_SUDO_PASSWORD", ok.seconds)
        assert ok.code == 0, ok
        assert secret not in ok.stdout and secret not in ok.stderr
        assert "$ sudo /usr/sbin/ip link set" in ok.stderr  # -v: the command, not the password
        for host in pwlab.hosts:
            assert actions(by_host(ok)[host]) == ["create_network", "set_promisc"]
            converged(pwlab, host)
        down = orch(pwlab, home, "teardown", "--json", extra_env={"ORCH_SUDO_PASSWORD": secret})
        assert down.code == 0, down
        assert secret not in down.stdout + down.stderr
        for host in pwlab.hosts:
            untouched(pwlab, host)
    finally:
        sudoers.unlink(missing_ok=True)
        subprocess.run(["usermod", "-p", "*", "orchpw"], capture_output=True)
        state = pwlab.lab.load_state()
        run_orch("lab", "down", *pwlab.lab_args(), timeout=120)
        if state is not None and state.created_user:
            # `lab down` keeps the user while other labs are up; it is this test's own user.
            subprocess.run(["userdel", "orchpw"], capture_output=True)


# ------------------------------------------------------------------------- 3. hostile input
HOSTILE = {
    "parent": ('parent = "enp0s9"', 'parent = "enp0s9;touch {m}"', "defaults.parent"),
    "network": ('name = "mac_net1"', 'name = "$(touch {m})"', "networks[0].name"),
    "host": ('name = "host2"', 'name = "`touch {m}`"', "hosts[1].name"),
    "user": ('user = "orchlab"', 'user = "-oProxyCommand=touch {m}"', "defaults.user"),
}


@pytest.mark.parametrize("field", list(HOSTILE))
def test_hostile_input_reaches_no_host(lab: LabHandle, home: Path, field: str) -> None:
    marker = Path(f"/tmp/orch-pwned-{os.urandom(4).hex()}")
    old, new, where = HOSTILE[field]
    text = lab.inventory_text()
    assert old in text
    inv = lab.write_inventory(text.replace(old, new.format(m=marker), 1), f"hostile-{field}.toml")
    try:
        for command in (["setup", "--json"], ["verify"]):
            res = orch(lab, home, *command, inventory=inv)
            if command[0] == "setup":
                timed(f"3 hostile {field}", res.seconds)
            assert res.code == 3, res
            no_traceback(res)
            assert res.stdout == ""
            assert f"{inv.name}: {where}:" in res.stderr, res.stderr
            assert not marker.exists(), f"{marker} was created: input reached a shell"
        for host in lab.hosts:
            untouched(lab, host)
    finally:
        marker.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- 4. faults
def test_host_unreachable_from_the_start(lab: LabHandle, home: Path) -> None:
    fault(lab, "host2", "mgmt-down")
    try:
        res = orch(lab, home, "setup", "--json")
        timed("4a setup, host2 unreachable", res.seconds)
        assert res.code == 1, res
        assert res.seconds < CONNECT_TIMEOUT + SLACK, res.seconds
        reports = by_host(res)
        assert actions(reports["host1"]) == ["create_network", "set_promisc"]
        assert reports["host2"] == {
            "host": "host2",
            "status": "failed",
            "done": [],
            "error": f"no answer from orchlab@{lab.address('host2')}:22 within 5 s",
            "rolled_back": [],
        }
        converged(lab, "host1")
        untouched(lab, "host2")

        ver = orch(lab, home, "verify", "--json")
        timed("4a verify, host2 unreachable", ver.seconds)
        assert ver.code == 1, ver
        no_traceback(ver)
        assert ver.seconds < CONNECT_TIMEOUT + SLACK + 5, ver.seconds
        matrix = ver.json()["networks"][0]
        for cell in matrix["pairs"]:
            assert not cell["ok"] and "host2" in cell["reason"], cell
            assert "no answer" in cell["reason"], cell
        assert probes(lab, "host1") == []
    finally:
        fault(lab, "host2", "mgmt-down", on=False)
    healed = orch(lab, home, "setup", "--json")
    assert healed.code == 0, healed
    assert by_host(healed)["host1"]["status"] == "unchanged"
    assert actions(by_host(healed)["host2"]) == ["create_network", "set_promisc"]
    for host in lab.hosts:
        converged(lab, host)
    assert orch(lab, home, "verify").code == 0


def test_sshd_dies_in_the_middle_of_setup(lab: LabHandle, home: Path) -> None:
    def crash(_pid: int) -> None:
        fault(lab, "host2", "sshd-stop")
        assert sshd_pids(lab, "host2") == [], "sshd-stop must end the sessions too"

    try:
        run = Interrupted(lab, home, ["setup", "--json"], "host2: mac_net1: created", crash)
        res = run.run
        timed("4b setup, host2 sshd killed after its 1st step", run.seconds)
        assert res.code == 1, res
        no_traceback(res)
        reports = by_host(res)
        assert reports["host1"]["status"] == "changed"
        assert actions(reports["host1"]) == ["create_network", "set_promisc"]
        bad = reports["host2"]
        assert bad["status"] == "failed"
        # The connection died: orch could not undo the network, and says so (done = still
        # there). The network's labels record that promisc was off before orch.
        assert actions(bad) == ["create_network"]
        assert bad["error"].startswith("enp0s9: the SSH connection to the host broke"), bad
        assert len(bad["rolled_back"]) == 1
        assert bad["rolled_back"][0].startswith("could not remove network")
        converged(lab, "host1")
        # Left on host2: the network, enp0s9 not promiscuous; a rerun only sets promisc.
        net = lab.network("host2")
        assert net is not None and net["Labels"]["io.orch.promisc-before"] == "off"
        assert "PROMISC" not in lab.link("host2")["flags"]
    finally:
        fault(lab, "host2", "sshd-stop", on=False)
    healed = orch(lab, home, "setup", "--json")
    assert healed.code == 0, healed
    assert by_host(healed)["host1"]["status"] == "unchanged"
    assert actions(by_host(healed)["host2"]) == ["set_promisc"]
    for host in lab.hosts:
        converged(lab, host)
    # Teardown still knows promisc was off before orch, despite the crash.
    down = orch(lab, home, "teardown", "--json")
    assert down.code == 0, down
    for host in lab.hosts:
        assert lab.network(host) is None and "PROMISC" not in lab.link(host)["flags"]


def test_sshd_dies_in_the_middle_of_verify(lab: LabHandle, home: Path) -> None:
    assert orch(lab, home, "setup").code == 0

    def crash(_pid: int) -> None:
        fault(lab, "host2", "sshd-stop")
        assert sshd_pids(lab, "host2") == []

    try:
        run = Interrupted(lab, home, ["verify", "--json"], "host2: probe orch-probe-", crash)
        res = run.run
        timed("4b verify, host2 sshd killed after its probe started", run.seconds)
        assert res.code == 1, res
        no_traceback(res)
        matrix = res.json()["networks"][0]
        assert not matrix["ok"]
        cell = next(c for c in matrix["pairs"] if c["from"] == "host2")
        assert not cell["ok"] and cell["reason"], cell
        assert re.search(r"connection|SSH", cell["reason"]), cell
        assert probes(lab, "host1") == [], "host1's probe is removed"
        # host2's probe could not be removed (no connection): it is left running, harmless (no
        # capabilities but NET_RAW, read-only), ends by itself after PROBE_LIFETIME_S, and the
        # next verify removes it.
        assert len(probes(lab, "host2")) == 1
    finally:
        fault(lab, "host2", "sshd-stop", on=False)
    again = orch(lab, home, "verify", "--json")
    assert again.code == 0, again
    for host in lab.hosts:
        assert probes(lab, host) == [], f"{host}: leftover probe not removed"


def test_docker_engine_stopped(lab: LabHandle, home: Path) -> None:
    fault(lab, "host2", "docker-stop")
    try:
        res = orch(lab, home, "setup", "--json")
        timed("4c setup, host2 dockerd stopped", res.seconds)
        assert res.code == 1, res
        reports = by_host(res)
        assert actions(reports["host1"]) == ["create_network", "set_promisc"]
        bad = reports["host2"]
        assert bad["status"] == "failed" and bad["done"] == [] and bad["rolled_back"] == []
        assert bad["error"].startswith("docker: the Docker engine does not answer"), bad
        assert "(nothing changed on host2)" in bad["error"]
        converged(lab, "host1")
        untouched(lab, "host2", docker_up=False)

        ver = orch(lab, home, "verify", "--json")
        timed("4c verify, host2 dockerd stopped", ver.seconds)
        assert ver.code == 1, ver
        no_traceback(ver)
        matrix = ver.json()["networks"][0]
        assert all(not c["ok"] for c in matrix["pairs"])
        assert "Docker engine does not answer" in " ".join(matrix["hints"]), matrix
        assert probes(lab, "host1") == []
    finally:
        fault(lab, "host2", "docker-stop", on=False)
    untouched(lab, "host2")
    healed = orch(lab, home, "setup", "--json")
    assert healed.code == 0, healed
    assert actions(by_host(healed)["host2"]) == ["create_network", "set_promisc"]
    for host in lab.hosts:
        converged(lab, host)
    assert orch(lab, home, "verify").code == 0


def test_parent_nic_missing(lab: LabHandle, home: Path) -> None:
    text = lab.inventory_text().replace(
        'name = "host2"\n', 'name = "host2"\nparent = "enp0s10"\n', 1
    )
    inv = lab.write_inventory(text, "nic.toml")
    res = orch(lab, home, "setup", "--json", inventory=inv)
    timed("4d parent NIC missing on host2", res.seconds)
    assert res.code == 1, res
    reports = by_host(res)
    assert actions(reports["host1"]) == ["create_network", "set_promisc"]
    assert reports["host2"] == {
        "host": "host2",
        "status": "failed",
        "done": [],
        "error": "enp0s10: parent NIC enp0s10 does not exist (NICs here: enp0s8, enp0s9); fix "
        "parent in hosts.toml (nothing changed on host2)",
        "rolled_back": [],
    }
    converged(lab, "host1")
    untouched(lab, "host2")
    fixed = orch(lab, home, "setup", "--json")  # the inventory, fixed
    assert fixed.code == 0, fixed
    for host in lab.hosts:
        converged(lab, host)


def test_name_taken_by_a_bridge_network(lab: LabHandle, home: Path) -> None:
    made = lab.docker("host2", "network", "create", "mac_net1")
    assert made.returncode == 0, made.stderr
    res = orch(lab, home, "setup", "--json")
    timed("4e name taken by a bridge network", res.seconds)
    assert res.code == 1, res
    reports = by_host(res)
    assert actions(reports["host1"]) == ["create_network", "set_promisc"]
    bad = reports["host2"]
    assert bad["status"] == "failed" and bad["done"] == [] and bad["rolled_back"] == []
    assert bad["error"].startswith(
        "mac_net1: drift: not made by orch; driver bridge (want macvlan)"
    )
    assert "--replace" in bad["error"] and "(nothing changed on host2)" in bad["error"]
    converged(lab, "host1")
    assert "PROMISC" not in lab.link("host2")["flags"]
    assert (lab.network("host2") or {})["Driver"] == "bridge"
    replaced = orch(lab, home, "setup", "--replace", "--json")
    assert replaced.code == 0, replaced
    assert actions(by_host(replaced)["host2"]) == ["replace_network", "set_promisc"]
    for host in lab.hosts:
        converged(lab, host)


def test_pool_overlap_changes_nothing(lab: LabHandle, home: Path) -> None:
    made = lab.docker("host2", "network", "create", "--subnet", "172.16.86.0/24", "other")
    assert made.returncode == 0, made.stderr
    try:
        res = orch(lab, home, "setup", "--json")
        timed("4f pool overlaps on host2 (rollback)", res.seconds)
        assert res.code == 1, res
        reports = by_host(res)
        assert actions(reports["host1"]) == ["create_network", "set_promisc"]
        bad = reports["host2"]
        # Docker 20.10 says "failed to allocate gateway (...): Address already in use", newer
        # ones "Pool overlaps with other one on this address space"; orch says it in words.
        error = bad.pop("error")
        assert error.startswith(
            "mac_net1: subnet 172.16.86.0/24 overlaps another network on this engine (Docker: "
        ), error
        assert error.endswith("); remove that network or choose another subnet"), error
        assert bad == {
            "host": "host2",
            "status": "failed",
            "done": [],
            "rolled_back": [],  # the network is created first: nothing was changed yet
        }
        converged(lab, "host1")
        untouched(lab, "host2")
    finally:
        lab.docker("host2", "network", "rm", "other")
    healed = orch(lab, home, "setup", "--json")
    assert healed.code == 0, healed
    for host in lab.hosts:
        converged(lab, host)


def test_two_setups_at_once(lab: LabHandle, home: Path) -> None:
    argv = [*orch_argv(), "-i", str(lab.inventory), "setup", "--json"]
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_COLOR": "1", "HOME": str(home)},
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    timed("4g two setups at once (both done)", time.monotonic() - started)
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, (out, err)
        assert "Traceback" not in err
    for host in lab.hosts:
        converged(lab, host)
    again = orch(lab, home, "setup", "--json")
    assert again.code == 0 and again.json()["changes"] == [], again


def _ctrl_c(pid: int) -> None:
    os.kill(pid, signal.SIGINT)  # delivered when orch continues


def test_ctrl_c_during_setup(lab: LabHandle, home: Path) -> None:
    run = Interrupted(lab, home, ["setup", "--json"], ": mac_net1: created", _ctrl_c)
    res = run.run
    timed("4h Ctrl-C during setup", run.seconds)
    assert res.code == 130, res
    assert "interrupted" in res.stderr
    no_traceback(res)
    for host in lab.hosts:
        # Each host is either fully converged or as it was: never promisc without a network
        # (rolled back) or a network without promisc.
        if lab.network(host) is None:
            untouched(lab, host)
        else:
            converged(lab, host)
    rerun = orch(lab, home, "setup", "--json")
    assert rerun.code == 0, rerun
    for host in lab.hosts:
        converged(lab, host)


def test_ctrl_c_during_verify(lab: LabHandle, home: Path) -> None:
    assert orch(lab, home, "setup").code == 0
    run = Interrupted(lab, home, ["verify", "--json"], ": probe orch-probe-", _ctrl_c)
    res = run.run
    timed("4h Ctrl-C during verify", run.seconds)
    assert res.code == 130, res
    no_traceback(res)
    for host in lab.hosts:
        assert probes(lab, host) == [], f"{host}: probe left after Ctrl-C"
        converged(lab, host)


def test_sshd_that_never_answers_times_out(lab: LabHandle, home: Path) -> None:
    listener = lab.lab.host("host2").sshd_pid
    os.kill(listener, signal.SIGSTOP)  # the kernel still accepts TCP; no banner ever comes
    try:
        res = orch(lab, home, "setup", "--json", timeout=60)
        timed("4i sshd accepts TCP, never answers", res.seconds)
        assert res.code == 1, res
        no_traceback(res)
        assert res.seconds < CONNECT_TIMEOUT + SLACK, res.seconds
        reports = by_host(res)
        assert actions(reports["host1"]) == ["create_network", "set_promisc"]
        assert reports["host2"]["status"] == "failed" and reports["host2"]["done"] == []
        assert reports["host2"]["error"] == (
            f"orchlab@{lab.address('host2')}:22 accepted the connection but sshd did not answer "
            "within 5 s (no SSH banner; sshd hung or overloaded?)"
        )
        converged(lab, "host1")
        untouched(lab, "host2")
    finally:
        os.kill(listener, signal.SIGCONT)
    healed = orch(lab, home, "setup", "--json")
    assert healed.code == 0, healed
    for host in lab.hosts:
        converged(lab, host)


def test_host_vanishes_in_the_middle_of_setup(lab: LabHandle, home: Path) -> None:
    """No RST, no FIN: the host is just gone (cable pulled). Waits are bounded all the same."""

    def vanish(_pid: int) -> None:
        fault(lab, "host2", "mgmt-down")

    try:
        run = Interrupted(lab, home, ["setup", "--json"], "host2: mac_net1: created", vanish)
        res = run.run
        timed("4i host2 vanishes after its 1st step", run.seconds)
        assert res.code == 1, res
        no_traceback(res)
        # Opening the next channel and the undo attempt each give up after connect_timeout
        # (10.2 s here); without bounds this waited for TCP to give up (15 min).
        assert run.seconds < 3 * CONNECT_TIMEOUT + SLACK, run
        reports = by_host(res)
        assert actions(reports["host1"]) == ["create_network", "set_promisc"]
        bad = reports["host2"]
        assert bad["status"] == "failed" and actions(bad) == ["create_network"]
        assert bad["error"].startswith("enp0s9: the SSH connection to the host broke"), bad
        assert bad["rolled_back"][0].startswith("could not remove network")
        converged(lab, "host1")
        assert lab.network("host2") is not None
        assert "PROMISC" not in lab.link("host2")["flags"]
    finally:
        fault(lab, "host2", "mgmt-down", on=False)
    healed = orch(lab, home, "setup", "--json")
    assert healed.code == 0, healed
    assert actions(by_host(healed)["host2"]) == ["set_promisc"]
    for host in lab.hosts:
        converged(lab, host)
