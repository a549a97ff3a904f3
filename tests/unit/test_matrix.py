"""The connectivity matrix: ping script, parsing busybox output, pairs, hints, renderers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from orchestrator.matrix import (
    END_MARK,
    GREEN,
    NEIGH_MARK,
    PING_MARK,
    RED,
    RESET,
    Cell,
    HostDiagnosis,
    NetworkMatrix,
    PingResult,
    Probe,
    VerifyResult,
    build_matrix,
    junit_xml,
    make_hints,
    matrix_table,
    parse_ping_output,
    ping_script,
    probe_command,
    verify_text,
)
from orchestrator.model import VerifySettings
from tests.unit.fakebin import fake_bin

Pings = dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str]

# busybox `ping -q -c 3 -i 0.2 -W 1 -w 3 <ip>`, complete outputs
BB_OK = """PING 172.16.86.65 (172.16.86.65): 56 data bytes

--- 172.16.86.65 ping statistics ---
3 packets transmitted, 3 packets received, 0% packet loss
round-trip min/avg/max = 0.061/0.092/0.141 ms
"""
BB_LOST = """PING 172.16.86.66 (172.16.86.66): 56 data bytes

--- 172.16.86.66 ping statistics ---
3 packets transmitted, 0 packets received, 100% packet loss
"""
BB_PARTIAL = """PING 172.16.86.67 (172.16.86.67): 56 data bytes

--- 172.16.86.67 ping statistics ---
3 packets transmitted, 2 packets received, 33% packet loss
round-trip min/avg/max = 0.210/1.505/2.800 ms
"""
BB_UNREACHABLE = """PING 172.16.86.68 (172.16.86.68): 56 data bytes
ping: sendto: Network unreachable
"""
# iputils, in case an image ships it
IPUTILS_OK = """PING 172.16.86.69 (172.16.86.69) 56(84) bytes of data.

--- 172.16.86.69 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 402ms
rtt min/avg/max/mdev = 0.045/0.060/0.079/0.013 ms
"""

# busybox `ip neigh show` inside the probe
NEIGH = """172.16.86.65 dev eth0 lladdr 02:42:ac:10:56:41 ref 1 used 0/0/0 probes 1 REACHABLE
172.16.86.66 dev eth0  ref 1 used 0/0/0 probes 6 FAILED
172.16.86.67 dev eth0 lladdr 02:42:ac:10:56:43 used 0/0/0 probes 1 STALE
172.16.86.68 dev eth0  used 0/0/0 probes 3 INCOMPLETE
"""


def squash(ping_output: str) -> str:
    """What `ping ... 2>&1 | tail -n 3 | tr "\\n" " "` makes of `ping_output`."""
    return "".join(line + " " for line in ping_output.splitlines()[-3:])


def probe_output(outputs: dict[str, str], neigh: str = NEIGH) -> str:
    lines = [f"{PING_MARK} {ip} {squash(out)}" for ip, out in outputs.items()]
    return "\n".join([*lines, NEIGH_MARK, neigh])


# --- the script ----------------------------------------------------------------------------------


def test_ping_script_backgrounds_one_ping_per_target() -> None:
    targets = ["172.16.86.65", "172.16.86.66", "172.16.86.67"]
    script = ping_script(targets, VerifySettings())
    assert script.count("ping -q ") == 3
    assert script.count(") &") == 3
    for ip in targets:
        assert f"-w 3 {ip} 2>&1" in script
        assert f"{PING_MARK} {ip}" in script
    assert "-c 3 -i 0.2 -W 1 -w 3" in script
    assert "tail -n 3" in script
    assert script.endswith(f" wait; echo {NEIGH_MARK}; ip neigh show 2>&1; echo {END_MARK}")
    assert "\n" not in script  # the probe reads it with one `read`


def test_ping_script_refuses_a_target_with_a_newline() -> None:
    with pytest.raises(ValueError, match="newline"):
        ping_script(["10.0.0.2\nreboot"], VerifySettings())


def test_ping_script_uses_the_settings() -> None:
    script = ping_script(["10.0.0.2"], VerifySettings(count=10, interval=0.5, timeout=2))
    # deadline = count * interval + timeout + 1.5, whole seconds
    assert "ping -q -c 10 -i 0.5 -W 2 -w 8 10.0.0.2" in script


def test_ping_script_without_targets_only_reads_neighbours() -> None:
    script = ping_script([], VerifySettings())
    assert "ping" not in script
    assert NEIGH_MARK in script


def test_ping_script_shell_quotes_targets() -> None:
    hostile = "10.0.0.2; touch pwned"
    script = ping_script([hostile], VerifySettings())
    assert shlex.quote(hostile) in script
    assert f"-w 3 {hostile}" not in script


FAKE_PING = """#!/bin/sh
for last; do :; done
case "$last" in
  172.16.86.65) cat "$FAKE_DIR/ok" ;;
  172.16.86.66) sleep 0.2; cat "$FAKE_DIR/lost" ;;
  172.16.86.67) cat "$FAKE_DIR/partial" ;;
  *) echo "PING $last ($last): 56 data bytes"; echo "ping: sendto: Network unreachable" >&2 ;;
esac
"""


def test_ping_script_runs_under_sh_and_parses(tmp_path: Path) -> None:
    """The real script, with fake ping and ip: concurrency, tail/tr and markers line up."""
    (tmp_path / "ok").write_text(BB_OK)
    (tmp_path / "lost").write_text(BB_LOST)
    (tmp_path / "partial").write_text(BB_PARTIAL)
    (tmp_path / "neigh").write_text(NEIGH)
    fake_bin(tmp_path, "ping", FAKE_PING)
    fake_bin(tmp_path, "ip", '#!/bin/sh\ncat "$FAKE_DIR/neigh"\n')
    hostile = "$(touch pwned)"
    targets = ["172.16.86.65", "172.16.86.66", "172.16.86.67", "172.16.86.68", hostile]
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path)}
    done = subprocess.run(
        ["sh", "-c", ping_script(targets, VerifySettings())],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "pwned").exists(), "a target was run as a command"
    # every ping line comes before the neighbour table (wait)
    lines = done.stdout.splitlines()
    assert lines.index(NEIGH_MARK) == len(targets)
    assert lines[-1] == END_MARK
    results, neigh = parse_ping_output(done.stdout)
    assert results["172.16.86.65"] == PingResult(3, 3, 0.092)
    assert results["172.16.86.66"] == PingResult(3, 0, None)
    assert results["172.16.86.67"] == PingResult(3, 2, 1.505)
    assert "Network unreachable" in results["172.16.86.68"].detail
    assert neigh["172.16.86.65"] is True


# --- the probe's PID 1 ----------------------------------------------------------------------------

BUSYBOX = shutil.which("busybox")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
# Skipped on a laptop without busybox; in CI (which installs it) a missing busybox fails.
needs_busybox = pytest.mark.skipif(
    BUSYBOX is None and not IN_CI, reason="busybox (the probe image's shell) is not installed here"
)


@contextlib.contextmanager
def _probe(tmp_path: Path, lifetime_s: int = 30) -> Iterator[subprocess.Popen[str]]:
    """probe_command() under busybox sh, as PID 1 of a probe runs it (killed afterwards).

    busybox sh runs its own applets before anything on PATH (so no fake ping here): the
    scripts sent below ping only the loopback address.
    """
    assert BUSYBOX is not None
    probe = subprocess.Popen(
        [BUSYBOX, *probe_command(lifetime_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        yield probe
    finally:
        probe.kill()
        probe.wait()


@needs_busybox
def test_probe_runs_one_script_then_waits_for_the_end_line(tmp_path: Path) -> None:
    with _probe(tmp_path) as probe:
        assert probe.stdin is not None and probe.stdout is not None
        settings = VerifySettings(count=1, interval=0.2, timeout=1)
        probe.stdin.write(ping_script(["127.0.0.1"], settings) + "\n")
        probe.stdin.flush()
        lines: list[str] = []
        while not lines or lines[-1] != END_MARK:
            line = probe.stdout.readline()
            assert line, f"the probe ended early: {lines}"
            lines.append(line.rstrip("\n"))
        results, _ = parse_ping_output("\n".join(lines))
        assert results["127.0.0.1"].ok, lines
        # still up, so that the other probes can ping it, until the end line
        with pytest.raises(subprocess.TimeoutExpired):
            probe.wait(timeout=0.3)
        probe.stdin.write("\n")
        probe.stdin.flush()
        assert probe.wait(timeout=5) == 0


@needs_busybox
def test_probe_ends_at_once_on_sigterm_while_waiting(tmp_path: Path) -> None:
    with _probe(tmp_path) as probe:
        with pytest.raises(subprocess.TimeoutExpired):
            probe.wait(timeout=0.3)
        probe.terminate()
        assert probe.wait(timeout=2) == 0


@needs_busybox
def test_probe_without_a_script_ends_by_itself(tmp_path: Path) -> None:
    with _probe(tmp_path, lifetime_s=1) as probe:
        assert probe.wait(timeout=5) == 0  # its lifetime, not a kill
    with _probe(tmp_path) as probe:
        assert probe.stdin is not None
        probe.stdin.close()  # stdin closed before any script: nothing to wait for
        assert probe.wait(timeout=5) == 0


# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "sent", "received", "rtt", "loss", "ok"),
    [
        (BB_OK, 3, 3, 0.092, 0.0, True),
        (BB_LOST, 3, 0, None, 100.0, False),
        (BB_PARTIAL, 3, 2, 1.505, 33.3, True),
        (IPUTILS_OK, 3, 3, 0.060, 0.0, True),
    ],
    ids=["all ok", "100% loss", "partial loss", "iputils"],
)
def test_parse_ping_statistics(
    output: str, sent: int, received: int, rtt: float | None, loss: float, ok: bool
) -> None:
    results, _ = parse_ping_output(probe_output({"172.16.86.65": output}, neigh=""))
    res = results["172.16.86.65"]
    assert (res.sent, res.received, res.rtt_ms) == (sent, received, rtt)
    assert res.loss == loss
    assert res.ok is ok
    assert res.detail == ""


def test_parse_ping_error_keeps_the_message() -> None:
    results, _ = parse_ping_output(probe_output({"172.16.86.68": BB_UNREACHABLE}, neigh=""))
    res = results["172.16.86.68"]
    assert (res.sent, res.received, res.rtt_ms) == (0, 0, None)
    assert not res.ok
    assert res.loss == 100.0
    assert "ping: sendto: Network unreachable" in res.detail


def test_parse_ping_without_output() -> None:
    results, _ = parse_ping_output(f"{PING_MARK} 172.16.86.70 \n{NEIGH_MARK}\n")
    assert results["172.16.86.70"].detail == "no output from ping"
    assert not results["172.16.86.70"].ok


def test_parse_neighbours() -> None:
    _, neigh = parse_ping_output(probe_output({}, NEIGH))
    assert neigh == {
        "172.16.86.65": True,  # REACHABLE with lladdr
        "172.16.86.66": False,  # FAILED
        "172.16.86.67": True,  # STALE, but the MAC was learnt
        "172.16.86.68": False,  # INCOMPLETE
    }


def test_parse_ignores_noise_and_neigh_errors() -> None:
    text = "\n".join(
        [
            "OCI runtime exec failed? no, just noise",
            f"{PING_MARK} 172.16.86.65 {squash(BB_OK)}",
            NEIGH_MARK,
            "",
        ]
    )
    results, neigh = parse_ping_output(text)
    assert list(results) == ["172.16.86.65"]
    assert neigh == {}


def test_parse_stops_at_the_end_mark() -> None:
    text = probe_output({"172.16.86.65": BB_OK}, NEIGH) + f"\n{END_MARK}\n{PING_MARK} 10.0.0.9 x"
    results, neigh = parse_ping_output(text)
    assert list(results) == ["172.16.86.65"]
    assert END_MARK not in neigh and len(neigh) == 4


def test_parse_several_targets() -> None:
    text = probe_output(
        {"172.16.86.65": BB_OK, "172.16.86.66": BB_LOST, "172.16.86.67": BB_PARTIAL}
    )
    results, neigh = parse_ping_output(text)
    assert [r.ok for r in results.values()] == [True, False, True]
    assert len(neigh) == 4


# --- building the matrix -------------------------------------------------------------------------

HOSTS = ["host1", "host2", "host3"]
IPS = {"host1": "172.16.86.2", "host2": "172.16.86.66", "host3": "172.16.86.130"}
OK = PingResult(3, 3, 0.1)
LOST = PingResult(3, 0, None)


def probes(**errors: str) -> dict[str, Probe]:
    return {
        h: Probe(h, "mac_net1", error=errors[h]) if h in errors else Probe(h, "mac_net1", IPS[h])
        for h in HOSTS
    }


def pings(
    failing: Collection[tuple[str, str]] = (),
    arp: bool = False,
    hosts: list[str] = HOSTS,
) -> Pings:
    """Every probe pinged every other; `failing` pairs lost everything."""
    out: Pings = {}
    for src in hosts:
        results = {IPS[d]: (LOST if (src, d) in failing else OK) for d in hosts if d != src}
        neigh = {IPS[d]: (arp or (src, d) not in failing) for d in hosts if d != src}
        out[src] = (results, neigh)
    return out


def test_build_matrix_all_ok() -> None:
    m = build_matrix("mac_net1", HOSTS, probes(), pings())
    assert m.ok
    assert len(m.cells) == 6
    assert {(c.src, c.dst) for c in m.cells} == {(a, b) for a in HOSTS for b in HOSTS if a != b}
    c = m.cell("host1", "host2")
    assert c is not None
    assert (c.src_ip, c.dst_ip, c.ok, c.loss, c.rtt_ms, c.reason) == (
        IPS["host1"],
        IPS["host2"],
        True,
        0.0,
        0.1,
        "",
    )
    assert c.arp_resolved is True
    assert m.cell("host1", "host1") is None
    assert m.hints == () and m.probe_errors == ()


NO_IMAGE = "image orch-probe:latest not found; pass --probe-tar"


def results_of(out: Pings, host: str) -> dict[str, PingResult]:
    entry = out[host]
    assert not isinstance(entry, str)
    return entry[0]


def test_build_matrix_with_probe_and_exec_errors() -> None:
    ps = probes(host3=NO_IMAGE)
    ping_out = pings(hosts=["host1", "host2"])
    ping_out["host2"] = "Conflict: container 1234 is not running"
    m = build_matrix("mac_net1", HOSTS, ps, ping_out)
    assert not m.ok
    assert m.probe_errors == (("host3", NO_IMAGE),)
    reasons = {(c.src, c.dst): c.reason for c in m.cells if not c.ok}
    assert reasons == {
        ("host1", "host3"): f"no probe on host3: {NO_IMAGE}",
        ("host2", "host1"): "ping from host2 failed: Conflict: container 1234 is not running",
        ("host2", "host3"): f"no probe on host3: {NO_IMAGE}",
        ("host3", "host1"): f"no probe on host3: {NO_IMAGE}",
        ("host3", "host2"): f"no probe on host3: {NO_IMAGE}",
    }
    ok = m.cell("host1", "host2")
    assert ok is not None and ok.ok
    for c in m.cells:
        if not c.ok:
            assert c.loss == 100.0 and c.rtt_ms is None


def test_build_matrix_missing_probe_and_missing_result() -> None:
    ps = probes()
    del ps["host3"]
    ping_out = pings(hosts=["host1", "host2"])
    del ping_out["host2"]
    m = build_matrix("mac_net1", HOSTS, ps, ping_out)
    reasons = {(c.src, c.dst): c.reason for c in m.cells if not c.ok}
    assert reasons[("host3", "host1")] == "no probe on host3: not started"
    assert reasons[("host1", "host3")] == "no probe on host3: not started"
    assert reasons[("host2", "host1")] == "ping from host2 failed: no result"
    assert m.probe_errors == ()  # a probe never attempted is not a probe error


def test_build_matrix_target_without_result() -> None:
    ping_out = pings()
    del results_of(ping_out, "host1")[IPS["host2"]]
    m = build_matrix("mac_net1", HOSTS, probes(), ping_out)
    c = m.cell("host1", "host2")
    assert c is not None and not c.ok and c.reason == "no ping result"


def test_failed_cell_reasons_from_ping() -> None:
    out: Pings = {
        "host1": (
            {
                IPS["host2"]: PingResult(3, 0, None),
                IPS["host3"]: PingResult(0, 0, None, "ping: sendto: Network unreachable"),
            },
            {},
        )
    }
    m = build_matrix("mac_net1", HOSTS, probes(), {**pings(), **out})
    c12, c13 = m.cell("host1", "host2"), m.cell("host1", "host3")
    assert c12 is not None and c12.reason == "100% loss" and c12.arp_resolved is None
    assert c13 is not None and c13.reason == "ping: sendto: Network unreachable"


# --- hints ---------------------------------------------------------------------------------------

UNREACHABLE_HOST3 = {("host1", "host3"), ("host2", "host3"), ("host3", "host1"), ("host3", "host2")}


@pytest.mark.parametrize(
    ("diagnosis", "arp", "words"),
    [
        (HostDiagnosis(network_state="absent"), False, ["network mac_net1 is missing", "setup"]),
        (HostDiagnosis(network_state="drift"), False, ["drifted", "--replace"]),
        (HostDiagnosis(network_state="not orch's"), False, ["drifted"]),
        (HostDiagnosis(nic="enp0s9", nic_exists=False), False, ["enp0s9 does not exist"]),
        (
            HostDiagnosis(nic="enp0s9", nic_up=False),
            False,
            ["enp0s9 is DOWN", "ip link set enp0s9 up"],
        ),
        (
            HostDiagnosis(nic="enp0s9", nic_promisc=False),
            True,
            ["enp0s9 is not in promiscuous mode", "orch setup"],
        ),
        (
            HostDiagnosis(docker_ok=False, docker_error="Cannot connect to the Docker daemon"),
            False,
            ["Docker engine does not answer", "Cannot connect to the Docker daemon", "dockerd"],
        ),
        (HostDiagnosis(nic="enp0s9"), True, ["ARP toward host3 resolves", '"Allow All"']),
        (HostDiagnosis(nic="enp0s9"), False, ["ARP unanswered", "cabling"]),
    ],
    ids=[
        "missing network",
        "drift",
        "foreign",
        "NIC missing",
        "NIC down",
        "not promisc",
        "docker down",
        "ARP but lost",
        "nothing",
    ],
)
def test_hint_for_a_host_nothing_reaches(
    diagnosis: HostDiagnosis, arp: bool, words: list[str]
) -> None:
    m = build_matrix(
        "mac_net1", HOSTS, probes(), pings(UNREACHABLE_HOST3, arp=arp), {"host3": diagnosis}
    )
    (hint,) = m.hints
    assert hint.startswith("host3: ")
    for word in words:
        assert word in hint, f"{word!r} not in {hint!r}"


def test_no_hint_when_only_one_cell_fails() -> None:
    m = build_matrix("mac_net1", HOSTS, probes(), pings({("host1", "host2")}))
    assert not m.ok
    assert m.hints == ()
    assert make_hints(m, {"host2": HostDiagnosis(network_state="absent")}) == []


def test_no_hint_for_a_single_host() -> None:
    m = build_matrix("mac_net1", ["host1"], probes(), {})
    assert m.cells == () and m.ok and m.hints == ()


def test_hint_for_a_host_that_reaches_nobody() -> None:
    # host1's row fails (e.g. its own NIC drops frames) but it is reached by the others
    failing = {("host1", "host2"), ("host1", "host3")}
    diag = {"host1": HostDiagnosis(nic="enp0s9", nic_promisc=False)}
    m = build_matrix("mac_net1", HOSTS, probes(), pings(failing), diag)
    assert m.hints == ("host1: parent NIC enp0s9 is not in promiscuous mode; run `orch setup`",)


def test_two_hosts_one_failing_direction_names_the_host_nothing_reaches() -> None:
    hosts = ["host1", "host2"]
    m = build_matrix(
        "mac_net1",
        hosts,
        {h: Probe(h, "mac_net1", IPS[h]) for h in hosts},
        pings({("host1", "host2")}, arp=True, hosts=hosts),
    )
    (hint,) = m.hints
    assert hint.startswith("host2: ARP toward host2 resolves")


# --- rendering -----------------------------------------------------------------------------------


def result_with_failures() -> VerifyResult:
    ps = probes(host3="probe got no address")
    m1 = build_matrix("mac_net1", HOSTS, ps, pings(hosts=["host1", "host2"]))
    m2 = build_matrix("mac_net2", ["host1", "host2"], probes(), pings(hosts=["host1", "host2"]))
    return VerifyResult((m1, m2), elapsed_s=3.21, errors=("host4: cannot connect",))


def test_junit_xml_has_a_testcase_per_pair_and_probe_failure() -> None:
    root = ET.fromstring(junit_xml(result_with_failures()))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["mac_net1", "mac_net2"]
    s1, s2 = suites
    names1 = [c.get("name", "") for c in s1.findall("testcase")]
    assert names1[0] == "probe on host3"
    assert sorted(names1[1:]) == sorted(f"{a} -> {b}" for a in HOSTS for b in HOSTS if a != b)
    assert s1.get("tests") == "7"
    assert s1.get("failures") == str(4 + 1)
    failed = {
        c.get("name"): c.find("failure").get("message")  # type: ignore[union-attr]
        for c in s1.findall("testcase")
        if c.find("failure") is not None
    }
    assert failed["probe on host3"] == "probe got no address"
    assert failed["host1 -> host3"] == "no probe on host3: probe got no address"
    assert (s2.get("tests"), s2.get("failures")) == ("2", "0")
    for case in s2.findall("testcase"):
        assert case.get("classname") == "mac_net2"
        assert float(case.get("time", "x")) == pytest.approx(0.0001)
        assert case.find("failure") is None


def test_junit_xml_escapes_reasons() -> None:
    cell = Cell("a", "b", "1", "2", False, 100.0, None, 'bad <&> "quote"')
    xml = junit_xml(VerifyResult((NetworkMatrix("n", ("a", "b"), (cell,)),)))
    (case,) = ET.fromstring(xml).iter("testcase")
    assert case.find("failure").get("message") == 'bad <&> "quote"'  # type: ignore[union-attr]


def test_verify_text_all_ok() -> None:
    m = build_matrix("mac_net1", HOSTS, probes(), pings())
    text = verify_text(VerifyResult((m,), elapsed_s=1.234))
    assert text.splitlines()[0] == "network mac_net1"
    assert text.splitlines()[-1] == "6/6 paths ok (1.2 s)"
    assert "\033[" not in text


def test_verify_text_with_failures() -> None:
    text = verify_text(result_with_failures())
    lines = text.splitlines()
    summary = next(line for line in lines if re.fullmatch(r"\d+/\d+ paths ok.*", line))
    assert summary == "4/8 paths ok; failed:"
    assert "  probe on host3 did not start: probe got no address" in lines
    assert "error: host4: cannot connect" in lines
    assert "  mac_net1: host1 -> host3 (no probe on host3: probe got no address)" in lines
    assert lines.index(summary) < lines.index(
        "  mac_net1: host3 -> host2 (no probe on host3: probe got no address)"
    )


def test_verify_text_shows_hints() -> None:
    m = build_matrix(
        "mac_net1",
        HOSTS,
        probes(),
        pings(UNREACHABLE_HOST3, arp=True),
        {"host3": HostDiagnosis(nic="enp0s9")},
    )
    text = verify_text(VerifyResult((m,)))
    assert any(line.startswith("  hint: host3: ARP toward host3") for line in text.splitlines())
    assert "2/6 paths ok; failed:" in text.splitlines()


def test_matrix_table_cells_and_color() -> None:
    out: Pings = pings({("host2", "host1")})
    results_of(out, "host1")[IPS["host3"]] = PingResult(3, 2, 0.5)
    m = build_matrix("mac_net1", HOSTS, probes(), out)
    plain = matrix_table(m)
    assert "\033[" not in plain
    rows = plain.splitlines()
    assert rows[0].split() == ["from", "\\", "to", "host1", "host2", "host3"]
    row1 = next(r for r in rows if r.startswith("host1"))
    assert "ok 0.10 ms" in row1 and "ok 0.50 ms 33.3% loss" in row1
    row2 = next(r for r in rows if r.startswith("host2"))
    assert "FAIL 100%" in row2
    colored = matrix_table(m, color=True)
    assert f"{GREEN}ok 0.10 ms{RESET}" in colored
    assert f"{RED}FAIL 100%{RESET}" in colored


def test_verify_result_as_dict_is_json() -> None:
    data = json.loads(json.dumps(result_with_failures().as_dict()))
    assert data["ok"] is False
    assert data["elapsed_s"] == 3.21
    assert data["errors"] == ["host4: cannot connect"]
    n1 = data["networks"][0]
    assert n1["name"] == "mac_net1" and n1["ok"] is False
    assert len(n1["pairs"]) == 6
    assert set(n1["pairs"][0]) == {
        "from",
        "to",
        "from_ip",
        "to_ip",
        "ok",
        "loss",
        "rtt_ms",
        "reason",
    }
    assert n1["probe_errors"] == [{"host": "host3", "reason": "probe got no address"}]
    assert data["networks"][1]["ok"] is True


def test_a_probe_that_could_not_ping_does_not_blame_its_peer() -> None:
    # host2's connection broke after its probe started: host1 measured host2 fine, host2 could
    # not run its pings. Nothing is wrong with host1.
    probes = {
        "host1": Probe("host1", "mac_net1", ip="172.16.86.2"),
        "host2": Probe("host2", "mac_net1", ip="172.16.86.64"),
    }
    ok = PingResult(3, 3, 0.2)
    pings: dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str] = {
        "host1": ({"172.16.86.64": ok}, {"172.16.86.64": True}),
        "host2": "the SSH connection to the host broke",
    }
    m = build_matrix("mac_net1", ["host1", "host2"], probes, pings)
    assert not m.ok
    assert m.ping_errors == (("host2", "the SSH connection to the host broke"),)
    assert len(m.hints) == 1 and m.hints[0].startswith("host2: its probe could not run its pings")
