"""Fixtures for lab tests: real namespace labs driven through the real `orch` command.

Each lab gets a unique name and management subnet, so labs of different tests (or a developer's
own `.lab`) never collide. Every lab is taken down again, and the test fails if anything of it
remains. Checks go around orch: plain `ssh` with strict host-key checking, the plain docker CLI,
and `ip` inside the host's namespace.
"""

from __future__ import annotations

import json
import os
import platform
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.core import DATA_ROOT, NETNS_DIR, RUN_ROOT, Lab

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def orch_argv() -> list[str]:
    exe = shutil.which("orch", path=str(Path(sys.executable).parent)) or shutil.which("orch")
    return [exe] if exe else [sys.executable, "-m", "orchestrator"]


def lab_machine_ok() -> str | None:
    """None when this machine can run labs, else why not."""
    if platform.system() != "Linux":
        return "lab tests need Linux"
    if os.geteuid() != 0:
        return "lab tests need root (namespaces, bridges)"
    for tool in ("sshd", "dockerd", "busybox", "nft"):
        if not shutil.which(tool) and not Path("/usr/sbin", tool).exists():
            return f"lab tests need {tool} (run tasks/bootstrap.sh)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def _lab_machine() -> None:
    why = lab_machine_ok()
    if why is None:
        return
    if IN_CI:
        pytest.fail(f"CI must run the lab tests, but {why}")
    pytest.skip(why)


def free_subnet() -> str:
    """A /24 in 10.231.0.0/16 that nothing on this machine routes yet."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True
    ).stdout
    for _ in range(200):
        third = random.randint(1, 254)
        prefix = f"10.231.{third}."
        if prefix not in routes:
            return f"{prefix}0/24"
    raise RuntimeError("no free 10.231.x.0/24")


@dataclass
class Run:
    """A finished orch command."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        cmd = " ".join(self.argv)
        return f"$ {cmd}\nexit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_orch(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Run:
    import time

    argv = [*orch_argv(), *args]
    start = time.monotonic()
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        cwd=cwd,
    )
    return Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


class LabHandle:
    """A lab brought up by `orch lab up`, with helpers that check it from outside orch."""

    def __init__(self, name: str, state_dir: Path, hosts: int, subnet: str, user: str) -> None:
        self.name = name
        self.state_dir = state_dir
        self.hosts = [f"host{k}" for k in range(1, hosts + 1)]
        self.subnet = subnet
        self.user = user
        self.lab = Lab(name, state_dir)

    @property
    def inventory(self) -> Path:
        return self.state_dir / "hosts.toml"

    def lab_args(self) -> list[str]:
        return ["--name", self.name, "--state-dir", str(self.state_dir)]

    def orch(self, *args: str, inventory: Path | None = None, **kw: Any) -> Run:
        return run_orch("-i", str(inventory or self.inventory), *args, **kw)

    def address(self, host: str) -> str:
        return self.lab.host(host).address

    def ssh(
        self, host: str, command: str, user: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Plain OpenSSH with strict host-key checking against the lab's known_hosts."""
        return subprocess.run(
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={self.state_dir / 'known_hosts'}",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=5",
                "-i",
                str(self.state_dir / "id_ed25519"),
                "-l",
                user or self.user,
                self.address(host),
                command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def sh(self, host: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run argv inside the host's namespaces (as root, not over SSH)."""
        return self.lab.exec_in(host, argv)

    def docker(self, host: str, *args: str) -> subprocess.CompletedProcess[str]:
        sock = f"unix://{self.lab.docker_sock(self.lab.host(host).index)}"
        return subprocess.run(
            ["docker", "-H", sock, *args], capture_output=True, text=True, timeout=60
        )

    def link(self, host: str, nic: str = "enp0s9") -> dict[str, Any]:
        out = self.sh(host, ["ip", "-j", "-d", "link", "show", "dev", nic])
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)[0]  # type: ignore[no-any-return]

    def network(self, host: str, name: str = "mac_net1") -> dict[str, Any] | None:
        out = self.docker(host, "network", "inspect", name)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)[0]  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Back to a fresh lab: no containers, no user networks, promisc off, NICs up."""
        for host in self.hosts:
            ids = self.docker(host, "ps", "-aq").stdout.split()
            if ids:
                self.docker(host, "rm", "-f", *ids)
            nets = self.docker(host, "network", "ls", "--format", "{{.Name}}").stdout.split()
            for net in nets:
                if net not in ("bridge", "host", "none"):
                    self.docker(host, "network", "rm", net)
            for nic in ("enp0s8", "enp0s9"):
                self.sh(host, ["ip", "link", "set", nic, "up", "promisc", "off"])

    def write_inventory(self, text: str, name: str = "custom.toml") -> Path:
        path = self.state_dir / name
        path.write_text(text)
        return path

    def inventory_text(self) -> str:
        return self.inventory.read_text()


def lab_leftovers(name: str) -> list[str]:
    """Whatever of lab `name` still exists on this machine."""
    left = []
    for path in NETNS_DIR.glob(f"orch-{name}-h*"):
        left.append(f"netns {path.name}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for bridge in (f"om-{name}", f"od-{name}", f"o{name}-"):
        if f" {bridge}" in links:
            left.append(f"link {bridge}*")
    mounts = Path("/proc/self/mountinfo").read_text()
    for root in (RUN_ROOT / name, DATA_ROOT / name):
        if str(root) in mounts:
            left.append(f"mount under {root}")
        if root.exists():
            left.append(f"dir {root}")
    if f"orch-lab {name}" in Path("/etc/hosts").read_text():
        left.append("/etc/hosts block")
    return left


@pytest.fixture(scope="session")
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LabHandle]]:
    made: list[LabHandle] = []

    def make(hosts: int = 2, user: str = "orchlab", sudo: bool = True) -> LabHandle:
        name = "t" + secrets.token_hex(3)
        state_dir = tmp_path_factory.mktemp(f"lab-{name}")
        os.chmod(state_dir, 0o755)
        subnet = free_subnet()
        args = [
            "lab",
            "up",
            "--hosts",
            str(hosts),
            "--name",
            name,
            "--state-dir",
            str(state_dir),
            "--subnet",
            subnet,
            "--user",
            user,
        ]
        if not sudo:
            args.append("--no-sudo")
        handle = LabHandle(name, state_dir, hosts, subnet, user)
        made.append(handle)
        up = run_orch(*args, timeout=180)
        assert up.code == 0, f"lab up failed (a failure, not a skip):\n{up}"
        return handle

    yield make
    problems = []
    for handle in made:
        down = run_orch("lab", "down", *handle.lab_args(), timeout=180)
        if down.code != 0:
            problems.append(str(down))
        left = lab_leftovers(handle.name)
        if left:
            problems.append(f"lab {handle.name} left behind: {left}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def lab2(lab_factory: Callable[..., LabHandle]) -> Iterator[LabHandle]:
    """A 2-host lab shared by a module's tests; reset after each test by `clean_lab2`."""
    handle = lab_factory(2)
    yield handle
    handle.reset()


@pytest.fixture
def clean_lab2(lab2: LabHandle) -> Iterator[LabHandle]:
    lab2.reset()
    yield lab2
    lab2.reset()
