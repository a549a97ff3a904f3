"""The connectivity matrix (pure): the ping script a probe runs, parsing its output, assembling
every ordered pair, hints for whole rows or columns that fail, and table/JSON/JUnit renderers.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from tabulate import tabulate

from orchestrator.model import VerifySettings

PING_MARK = "@@ping"
NEIGH_MARK = "@@neigh"
END_MARK = "@@end"
GREEN, RED, DIM, RESET = "\033[32m", "\033[31m", "\033[2m", "\033[0m"

_STATS_RE = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_RTT_RE = re.compile(r"min/avg/max(?:/mdev)? = [\d.]+/([\d.]+)/")


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe container: where it runs and its address (or why it could not start)."""

    host: str
    network: str
    ip: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True, slots=True)
class PingResult:
    """The pings from one probe to one target address."""

    sent: int
    received: int
    rtt_ms: float | None
    detail: str = ""

    @property
    def loss(self) -> float:
        return (
            100.0 if self.sent == 0 else round(100.0 * (self.sent - self.received) / self.sent, 1)
        )

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.received > 0


@dataclass(frozen=True, slots=True)
class Cell:
    """One ordered pair of the matrix."""

    src: str
    dst: str
    src_ip: str
    dst_ip: str
    ok: bool
    loss: float
    rtt_ms: float | None
    reason: str = ""
    arp_resolved: bool | None = None  # did the source learn the target's MAC?

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.src,
            "to": self.dst,
            "from_ip": self.src_ip,
            "to_ip": self.dst_ip,
            "ok": self.ok,
            "loss": self.loss,
            "rtt_ms": self.rtt_ms,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class NetworkMatrix:
    """All ordered pairs of one network, with hints."""

    network: str
    hosts: tuple[str, ...]
    cells: tuple[Cell, ...]
    probe_errors: tuple[tuple[str, str], ...] = ()  # (host, reason)
    hints: tuple[str, ...] = ()
    ping_errors: tuple[tuple[str, str], ...] = ()  # (host, reason): its probe could not ping

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cells) and not self.probe_errors

    def cell(self, src: str, dst: str) -> Cell | None:
        return next((c for c in self.cells if c.src == src and c.dst == dst), None)


@dataclass(frozen=True, slots=True)
class HostDiagnosis:
    """What observation said about one host, to explain failed rows and columns."""

    docker_ok: bool = True
    docker_error: str = ""
    reachable: bool = True  # False: the host itself could not be observed (SSH)
    network_state: str = "in sync"  # in sync | absent | drift | not orch's
    nic: str = ""
    nic_exists: bool = True
    nic_up: bool = True
    nic_promisc: bool = True


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The whole verification."""

    networks: tuple[NetworkMatrix, ...]
    elapsed_s: float = 0.0
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.networks) and not self.errors

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "elapsed_s": round(self.elapsed_s, 2),
            "networks": [
                {
                    "name": n.network,
                    "ok": n.ok,
                    "pairs": [c.as_dict() for c in n.cells],
                    "probe_errors": [{"host": h, "reason": r} for h, r in n.probe_errors],
                    "hints": list(n.hints),
                }
                for n in self.networks
            ],
            "errors": list(self.errors),
        }


def ping_deadline(settings: VerifySettings) -> int:
    """Whole seconds after which one target's ping gives up (`ping -w`)."""
    return int(settings.count * settings.interval + settings.timeout + 1.5)


def ping_script(targets: list[str], settings: VerifySettings) -> str:
    """A busybox sh script, on one line, that pings every target at once and prints one line
    per target, then the neighbour table (ARP: did the target answer at layer 2?), then
    END_MARK."""
    ping = (
        f"ping -q -c {settings.count} -i {settings.interval:g} -W {settings.timeout:g} "
        f"-w {ping_deadline(settings)}"
    )
    parts = []
    for target in targets:
        t = shlex.quote(target)
        parts.append(
            f'(r=$({ping} {t} 2>&1 | tail -n 3 | tr "\\n" " "); echo {PING_MARK} {t} "$r") &'
        )
    script = " ".join(parts) + f" wait; echo {NEIGH_MARK}; ip neigh show 2>&1; echo {END_MARK}"
    if "\n" in script:  # the probe reads it as one line (validated addresses never have one)
        raise ValueError("a ping target contains a newline")
    return script


def probe_command(lifetime_s: int) -> list[str]:
    """PID 1 of a probe: wait for one line on stdin (a `ping_script`) and run it; then stay up,
    so that the other probes can still ping this one, until a second line (or SIGTERM, which a
    bare PID 1 would ignore) ends it. Each wait gives up after `lifetime_s`."""
    return [
        "sh",
        "-c",
        f"trap 'exit 0' TERM; read -t {lifetime_s} -r s || exit 0; eval \"$s\"; "
        f"read -t {lifetime_s} -r s; exit 0",
    ]


def parse_ping_output(text: str) -> tuple[dict[str, PingResult], dict[str, bool]]:
    """Per target: the ping result; and per address: whether the neighbour entry has a MAC."""
    results: dict[str, PingResult] = {}
    neigh: dict[str, bool] = {}
    in_neigh = False
    for line in text.splitlines():
        if line.startswith(END_MARK):
            break
        if line.startswith(NEIGH_MARK):
            in_neigh = True
            continue
        if in_neigh:
            words = line.split()
            if words:
                neigh[words[0]] = "lladdr" in words and "FAILED" not in words
            continue
        if not line.startswith(PING_MARK):
            continue
        rest = line[len(PING_MARK) :].strip()
        target, _, summary = rest.partition(" ")
        stats = _STATS_RE.search(summary)
        rtt = _RTT_RE.search(summary)
        if stats is None:
            results[target] = PingResult(0, 0, None, summary.strip() or "no output from ping")
            continue
        results[target] = PingResult(
            sent=int(stats.group(1)),
            received=int(stats.group(2)),
            rtt_ms=float(rtt.group(1)) if rtt else None,
        )
    return results, neigh


def build_matrix(
    network: str,
    hosts: list[str],
    probes: dict[str, Probe],
    pings: dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str],
    diagnosis: dict[str, HostDiagnosis] | None = None,
) -> NetworkMatrix:
    """Every ordered pair (src != dst) of `hosts` on one network.

    Args:
        probes: host -> its probe (with an error when it could not start).
        pings: host -> parsed output of its probe's ping script, or why there is none.
        diagnosis: host -> observation facts, for hints.
    """
    cells = []
    for src in hosts:
        for dst in hosts:
            if src == dst:
                continue
            cells.append(_cell(src, dst, probes, pings))
    errors = tuple((h, probes[h].error) for h in hosts if h in probes and not probes[h].ok)
    silent = tuple((h, p) for h in hosts if isinstance(p := pings.get(h), str))
    matrix = NetworkMatrix(network, tuple(hosts), tuple(cells), errors, ping_errors=silent)
    hints = tuple(make_hints(matrix, diagnosis or {}))
    return NetworkMatrix(network, tuple(hosts), tuple(cells), errors, hints, silent)


def _cell(
    src: str,
    dst: str,
    probes: dict[str, Probe],
    pings: dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str],
) -> Cell:
    sp, dp = probes.get(src), probes.get(dst)
    src_ip = sp.ip if sp else ""
    dst_ip = dp.ip if dp else ""

    def failed(reason: str) -> Cell:
        return Cell(src, dst, src_ip, dst_ip, False, 100.0, None, reason)

    if sp is None or not sp.ok:
        return failed(f"no probe on {src}: {sp.error if sp else 'not started'}")
    if dp is None or not dp.ok:
        return failed(f"no probe on {dst}: {dp.error if dp else 'not started'}")
    out = pings.get(src)
    if out is None or isinstance(out, str):
        return failed(f"ping from {src} failed: {out or 'no result'}")
    results, neigh = out
    res = results.get(dst_ip)
    if res is None:
        return failed("no ping result")
    reason = "" if res.ok else (res.detail or f"{res.loss:g}% loss")
    return Cell(src, dst, src_ip, dst_ip, res.ok, res.loss, res.rtt_ms, reason, neigh.get(dst_ip))


def make_hints(matrix: NetworkMatrix, diagnosis: dict[str, HostDiagnosis]) -> list[str]:
    """Explain hosts whose whole column (nothing reaches them) or row fails."""
    hints: list[str] = []
    hosts = matrix.hosts
    if len(hosts) < 2:
        return hints
    probe_errors = dict(matrix.probe_errors)
    ping_errors = dict(matrix.ping_errors)
    unmeasured = set(probe_errors) | set(ping_errors)
    for host in hosts:
        # Pairs with a peer whose probe did not start or could not ping measured nothing about
        # this host: they are explained by that peer's hint.
        skip = unmeasured - {host}
        col = [c for c in matrix.cells if c.dst == host and c.src not in skip]
        row = [c for c in matrix.cells if c.src == host and c.dst not in skip]
        if all(c.ok for c in col) and all(c.ok for c in row):
            continue
        whole_col = bool(col) and not any(c.ok for c in col)
        whole_row = bool(row) and not any(c.ok for c in row)
        if not (whole_col or whole_row):
            continue
        d = diagnosis.get(host, HostDiagnosis())
        name = matrix.network
        if not d.reachable:
            hints.append(f"{host}: orch could not reach it ({d.docker_error}); see `orch status`")
        elif not d.docker_ok:
            hints.append(
                f"{host}: the Docker engine does not answer ({d.docker_error}); start dockerd there"
            )
        elif d.network_state == "absent":
            hints.append(f"{host}: network {name} is missing; run `orch setup`")
        elif d.network_state in ("drift", "not orch's"):
            hints.append(
                f"{host}: network {name} drifted from the inventory; see `orch status`, "
                "then `orch setup --replace`"
            )
        elif not d.nic_exists:
            hints.append(f"{host}: parent NIC {d.nic} does not exist")
        elif not d.nic_up:
            hints.append(
                f"{host}: parent NIC {d.nic} is DOWN or has no carrier; bring it up "
                f"(`ip link set {d.nic} up`) or run `orch setup`"
            )
        elif not d.nic_promisc:
            hints.append(f"{host}: parent NIC {d.nic} is not in promiscuous mode; run `orch setup`")
        elif host in probe_errors:
            # Nothing was pinged to or from it: not a cabling or ARP problem.
            hints.append(f"{host}: its probe did not start: {probe_errors[host]}")
        elif host in ping_errors and whole_row and not whole_col:
            hints.append(f"{host}: its probe could not run its pings: {ping_errors[host]}")
        elif whole_col and any(c.arp_resolved for c in col):
            hints.append(
                f"{host}: ARP toward {host} resolves but every ping to it is lost: the NIC or "
                "hypervisor under it drops frames for foreign MACs. VirtualBox: set the adapter's "
                'Promiscuous Mode to "Allow All"; vSphere: allow Promiscuous Mode and Forged '
                "Transmits; a cloud VPC usually blocks macvlan (use ipvlan)"
            )
        elif whole_col:
            hints.append(
                f"{host}: nothing reaches {host} (ARP unanswered); check its cabling, "
                "VLAN and switch port"
            )
    return hints


# ------------------------------------------------------------------------------ rendering
def matrix_table(m: NetworkMatrix, color: bool = False) -> str:
    """Rows = from, columns = to; each cell shows RTT or loss."""

    def paint(text: str, tint: str) -> str:
        return f"{tint}{text}{RESET}" if color else text

    rows = []
    for src in m.hosts:
        row = [src]
        for dst in m.hosts:
            if src == dst:
                row.append(paint("-", DIM))
                continue
            c = m.cell(src, dst)
            if c is None:
                row.append("?")
            elif c.ok:
                rtt = f"{c.rtt_ms:.2f} ms" if c.rtt_ms is not None else "ok"
                extra = f" {c.loss:g}% loss" if c.loss else ""
                row.append(paint(f"ok {rtt}{extra}", GREEN))
            else:
                row.append(paint(f"FAIL {c.loss:g}%", RED))
        rows.append(row)
    return tabulate(rows, headers=["from \\ to", *m.hosts], tablefmt="simple")


def verify_text(result: VerifyResult, color: bool = False) -> str:
    out = []
    total_ok = total = 0
    failed: list[str] = []
    for m in result.networks:
        out.append(f"network {m.network}")
        out.append(matrix_table(m, color))
        for host, reason in m.probe_errors:
            out.append(f"  probe on {host} did not start: {reason}")
        for c in m.cells:
            total += 1
            if c.ok:
                total_ok += 1
            else:
                failed.append(f"{m.network}: {c.src} -> {c.dst} ({c.reason})")
        for hint in m.hints:
            out.append(f"  hint: {hint}")
        out.append("")
    for error in result.errors:
        out.append(f"error: {error}")
    if result.ok:
        out.append(f"{total_ok}/{total} paths ok ({result.elapsed_s:.1f} s)")
    else:
        out.append(f"{total_ok}/{total} paths ok; failed:")
        out.extend(f"  {f}" for f in failed)
    return "\n".join(out)


def junit_xml(result: VerifyResult) -> str:
    """One test case per ordered pair, and one per probe that could not start."""
    suites = ET.Element("testsuites", name="orch verify")
    for m in result.networks:
        cases = len(m.cells) + len(m.probe_errors)
        failures = sum(1 for c in m.cells if not c.ok) + len(m.probe_errors)
        suite = ET.SubElement(
            suites, "testsuite", name=m.network, tests=str(cases), failures=str(failures)
        )
        for host, reason in m.probe_errors:
            case = ET.SubElement(suite, "testcase", classname=m.network, name=f"probe on {host}")
            ET.SubElement(case, "failure", message=reason)
        for c in m.cells:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=m.network,
                name=f"{c.src} -> {c.dst}",
                time=f"{(c.rtt_ms or 0) / 1000:.6f}",
            )
            if not c.ok:
                ET.SubElement(case, "failure", message=c.reason or "unreachable")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
