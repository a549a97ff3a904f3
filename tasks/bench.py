"""Benchmark orch on the namespace lab and print a Markdown table.

For each lab size N it brings a lab up, then times over several runs: `orch setup` from nothing,
`orch setup` when in sync, `orch verify`, `orch teardown`, and as a reference the same job done
sequentially with plain `ssh` + `docker` commands (one host after the other, no multiplexing).
It reports the median and the spread (min-max) of the wall time, and the peak RSS of the orch
process. Needs root on Linux (it builds labs).

    .venv/bin/python tasks/bench.py --hosts 2 4 8 16 --runs 5
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def orch_argv() -> list[str]:
    exe = shutil.which("orch", path=str(Path(sys.executable).parent)) or shutil.which("orch")
    return [exe] if exe else [sys.executable, "-m", "orchestrator"]


@dataclass
class Sample:
    """Wall times (s) and peak RSS (MiB) of repeated runs of one step."""

    times: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)

    def cell(self) -> str:
        if not self.times:
            return "-"
        med = statistics.median(self.times)
        return f"{med:.2f} ({min(self.times):.2f}-{max(self.times):.2f})"


def timed(argv: list[str], check: bool = True) -> tuple[float, float]:
    """Run argv; return (wall seconds, peak RSS MiB) of that one process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    if check and code != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"bench: {' '.join(argv)} exited {code}: {err}")
    return wall, usage.ru_maxrss / 1024


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Reference:
    """The same job, sequentially, with plain ssh and docker commands."""

    def __init__(self, state_dir: Path, hosts: list[tuple[str, str]], user: str) -> None:
        self.state_dir = state_dir
        self.hosts = hosts
        self.user = user

    def ssh(self, address: str, command: str) -> str:
        argv = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.state_dir / 'known_hosts'}",
            "-i",
            str(self.state_dir / "id_ed25519"),
            "-l",
            self.user,
            address,
            command,
        ]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def setup(self) -> None:
        for i, (_name, addr) in enumerate(self.hosts):
            rng = f"172.16.86.{i * 16}/28"
            self.ssh(
                addr,
                "sudo ip link set enp0s9 promisc on && docker network create -d "
                "macvlan --subnet 172.16.86.0/24 --gateway 172.16.86.1 --ip-range "
                f"{rng} -o parent=enp0s9 mac_net1",
            )

    def verify(self) -> None:
        ips = {}
        for name, addr in self.hosts:
            self.ssh(
                addr, "docker run -d --name refprobe --network mac_net1 orch-probe:latest sleep 300"
            )
            ips[name] = self.ssh(
                addr,
                "docker inspect refprobe --format "
                "'{{.NetworkSettings.Networks.mac_net1.IPAddress}}'",
            ).strip()
        for name, addr in self.hosts:
            for other, ip in ips.items():
                if other != name:
                    self.ssh(addr, f"docker exec refprobe ping -c 3 -W 1 {shlex.quote(ip)}")
        for _name, addr in self.hosts:
            self.ssh(addr, "docker rm -f refprobe")

    def teardown(self) -> None:
        for _name, addr in self.hosts:
            self.ssh(addr, "docker network rm mac_net1 && sudo ip link set enp0s9 promisc off")


def bench(n: int, runs: int, with_reference: bool) -> dict[str, Sample]:
    name = "b" + secrets.token_hex(3)
    state_dir = Path(tempfile.mkdtemp(prefix=f"orch-bench-{name}-"))
    os.chmod(state_dir, 0o755)  # noqa: S103 - the lab's sshd reads keys here
    lab = ["--name", name, "--state-dir", str(state_dir)]
    third = int(secrets.token_hex(1), 16) % 200 + 20
    subnet = f"10.233.{third}.0/24"
    orch = orch_argv()
    results: dict[str, Sample] = {
        k: Sample()
        for k in (
            "lab up",
            "setup (fresh)",
            "setup (in sync)",
            "verify",
            "teardown",
            "reference setup+verify+teardown",
        )
    }
    try:
        wall, _ = timed([*orch, "lab", "up", "--hosts", str(n), "--subnet", subnet, *lab])
        results["lab up"].times.append(wall)
        inv = ["-i", str(state_dir / "hosts.toml")]
        for _ in range(runs):
            for key, args in (
                ("setup (fresh)", ["setup"]),
                ("setup (in sync)", ["setup"]),
                ("verify", ["verify"]),
                ("teardown", ["teardown"]),
            ):
                wall, rss = timed([*orch, *inv, *args])
                results[key].times.append(wall)
                results[key].rss.append(rss)
        if with_reference:
            hosts = [(f"host{k}", f"10.233.{third}.{100 + k}") for k in range(1, n + 1)]
            ref = Reference(state_dir, hosts, "orchlab")
            for _ in range(runs):
                start = time.monotonic()
                ref.setup()
                ref.verify()
                ref.teardown()
                results["reference setup+verify+teardown"].times.append(time.monotonic() - start)
    finally:
        run([*orch, "lab", "down", *lab])
        shutil.rmtree(state_dir, ignore_errors=True)
    return results


def table(all_results: dict[int, dict[str, Sample]]) -> str:
    sizes = sorted(all_results)
    lines = [
        "| step | " + " | ".join(f"{n} hosts: median s (min-max)" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    keys = list(next(iter(all_results.values())))
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(all_results[n][key].cell() for n in sizes) + " |")
    combo = []
    for n in sizes:
        r = all_results[n]
        if r["setup (fresh)"].times and r["verify"].times:
            total = statistics.median(r["setup (fresh)"].times) + statistics.median(
                r["verify"].times
            )
            combo.append(f"{total:.2f}")
        else:
            combo.append("-")
    lines.append("| setup (fresh) + verify, medians | " + " | ".join(combo) + " |")
    peak = [
        f"{max((max(s.rss) for s in all_results[n].values() if s.rss), default=0):.0f}"
        for n in sizes
    ]
    lines.append("| peak RSS of orch, MiB | " + " | ".join(peak) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument(
        "--reference-max-hosts",
        type=int,
        default=8,
        help="run the sequential reference only up to this many hosts (it grows with the square "
        "of N: about 2.5 min per run at 8 hosts, 10 at 16)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (it builds namespace labs)")
    all_results = {}
    for n in args.hosts:
        print(f"bench: {n} hosts, {args.runs} run(s)...", file=sys.stderr)
        reference = not args.no_reference and n <= args.reference_max_hosts
        all_results[n] = bench(n, args.runs, reference)
    print(table(all_results))


if __name__ == "__main__":
    main()
