"""Bring a namespace lab up and down, report its state, and switch faults on and off.

A lab host is a network namespace (plus a UTS namespace for its hostname) with two NICs: `enp0s8`
on a management bridge that the root namespace reaches, and `enp0s9`, no address, on a data bridge
that plays the physical switch for macvlan. Each host runs its own sshd (own config, host key,
listen address; `SetEnv DOCKER_HOST` points SSH sessions at the host's own engine) and its own
dockerd (own data-root, exec-root, socket, pidfile). Every process is started by us and recorded
by PID; `down` ends exactly those and removes every namespace, link, mount and file it made.

Layout for a lab called NAME:
- runtime (tmpfs): /run/orch-lab/NAME/hK/{uts, docker.sock, docker.pid, sshd.pid, exec/, ...}
- engine data: /var/lib/orch-lab/NAME/hK/
- user-facing state dir (default .lab): hosts.toml, id_ed25519, known_hosts, lab.json, probe tar
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import ipaddress
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal

from orchestrator.errors import LabError
from orchestrator.lab.probe import build_rootfs_tar, find_busybox

RUN_ROOT = Path("/run/orch-lab")
DATA_ROOT = Path("/var/lib/orch-lab")
NETNS_DIR = Path("/var/run/netns")
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,7}")
MGMT_NIC = "enp0s8"
DATA_NIC = "enp0s9"
PROBE_IMAGE = "orch-probe:latest"
# Like the vagrant user of the VirtualBox lab: not root, passwordless sudo, in the docker group,
# and /bin/sh as shell (root's shell rc files on a developer machine can be slow).
DEFAULT_USER = "orchlab"
PROBE_TAR = "probe-rootfs.tar"
MAX_HOSTS = 32
DAEMON_WAIT = 30.0

FaultKind = Literal["data-down", "mgmt-down", "docker-stop", "sshd-stop", "mac-filter", "rekey"]
FAULTS: tuple[str, ...] = (
    "data-down",
    "mgmt-down",
    "docker-stop",
    "sshd-stop",
    "mac-filter",
    "rekey",
)


@dataclass
class LabHostState:
    """What the lab knows of one host (persisted in lab.json)."""

    index: int
    name: str
    netns: str
    address: str
    sshd_pid: int = 0
    dockerd_pid: int = 0


@dataclass
class LabState:
    """The whole lab as persisted in lab.json."""

    name: str
    subnet: str
    user: str
    sudo: bool
    created_user: bool
    state_dir: str
    hosts: list[LabHostState] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> LabState:
        raw = json.loads(path.read_text())
        hosts = [LabHostState(**h) for h in raw.pop("hosts")]
        return cls(hosts=hosts, **raw)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


@dataclass(frozen=True)
class HostStatus:
    """One row of `orch lab status`."""

    name: str
    netns: str
    address: str
    netns_present: bool
    sshd_alive: bool
    dockerd_alive: bool


def _run(args: list[str], check: bool = True, input_: bytes | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, input=input_, check=False)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
        raise LabError(f"`{' '.join(args)}` failed: {err}")
    return proc.stdout.decode(errors="replace")


def pid_alive(pid: int) -> bool:
    """True when `pid` runs (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while pid_alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.05)


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def docker_ping(sock: Path, timeout: float = 1.0) -> bool:
    """True when the engine behind unix socket `sock` answers GET /_ping."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(64).split(b"\r\n", 1)[0].endswith(b" 200 OK")
    except OSError:
        return False


def _wait_tcp(address: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


class Lab:
    """A namespace lab called `name` whose user-facing files live in `state_dir`."""

    def __init__(self, name: str = "lab", state_dir: Path | None = None) -> None:
        if not NAME_RE.fullmatch(name):
            raise LabError(
                f"lab name {name!r} is invalid; use 1-8 lower-case letters and digits, "
                "starting with a letter"
            )
        self.name = name
        self.state_dir = (state_dir or Path(".lab")).resolve()
        self.run_dir = RUN_ROOT / name
        self.data_dir = DATA_ROOT / name
        self.mgmt_bridge = f"om-{name}"
        self.data_bridge = f"od-{name}"
        self.nft_table = f"orch_lab_{name}"

    # ----------------------------------------------------------------- names and paths
    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "hosts.toml"

    def netns(self, k: int) -> str:
        return f"orch-{self.name}-h{k}"

    def host_dir(self, k: int) -> Path:
        return self.run_dir / f"h{k}"

    def docker_sock(self, k: int) -> Path:
        return self.host_dir(k) / "docker.sock"

    def veth(self, k: int, which: Literal["m", "d"]) -> str:
        return f"o{self.name}-{k}{which}"

    def load_state(self) -> LabState | None:
        """The persisted state, or None when this lab is not up."""
        if not self.state_file.exists():
            return None
        try:
            return LabState.load(self.state_file)
        except (OSError, ValueError, TypeError) as exc:
            raise LabError(
                f"{self.state_file}: unreadable lab state ({exc}); run `orch lab down`"
            ) from None

    # ----------------------------------------------------------------- preconditions
    @staticmethod
    def require_root() -> None:
        """Stop with one clear line when this machine cannot run a lab."""
        if platform.system() != "Linux":
            raise LabError(
                "orch lab needs Linux (network namespaces); this is " + platform.system()
            )
        if os.geteuid() != 0:
            raise LabError(
                "orch lab needs root (it creates namespaces and bridges); run it with sudo"
            )
        missing = [
            b
            for b in ("ip", "sshd", "dockerd", "ssh-keygen", "nsenter", "unshare", "docker")
            if shutil.which(b) is None and not Path("/usr/sbin", b).exists()
        ]
        if missing:
            raise LabError(
                f"orch lab needs {', '.join(missing)}; install with: apt-get install iproute2 "
                "openssh-server docker.io util-linux busybox-static"
            )

    def _check_subnet(self, subnet: IPv4Network) -> None:
        """Refuse a management subnet that the machine already uses (it would shadow a route)."""
        routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]")
        for route in routes:
            dst = route.get("dst", "")
            dev = route.get("dev", "")
            if (
                dst in ("default", "")
                or dev == self.mgmt_bridge
                or route.get("type") == "broadcast"
            ):
                continue
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(dst, strict=False)
                if (
                    isinstance(net, IPv4Network)
                    and net.overlaps(subnet)
                    and route.get("table") in (None, "main", "local")
                ):
                    if route.get("type") == "local" and dev == self.mgmt_bridge:
                        continue
                    raise LabError(
                        f"management subnet {subnet} overlaps {net} already routed via {dev}; "
                        "pick another with --subnet (e.g. 10.213.0.0/24)"
                    )

    # ----------------------------------------------------------------- up
    def up(
        self,
        hosts: int = 2,
        subnet: str = "192.168.56.0/24",
        user: str = DEFAULT_USER,
        sudo: bool = True,
        log: Callable[[str], None] = lambda _m: None,
    ) -> LabState:
        """Build the lab, or complete it (idempotent); returns its state.

        Raises:
            LabError: a precondition is missing or a step failed (the message says which).
        """
        self.require_root()
        if not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}, got {hosts}")
        try:
            mgmt = ipaddress.ip_network(subnet)
        except ValueError:
            raise LabError(f"--subnet {subnet!r} is not a CIDR such as 192.168.56.0/24") from None
        if not isinstance(mgmt, IPv4Network) or mgmt.num_addresses < 128 + hosts:
            raise LabError(f"--subnet {subnet} must be an IPv4 network of at least /25")
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
            raise LabError(f"--user {user!r} is not a valid user name")
        previous = self.load_state()
        if previous is not None and (previous.subnet != str(mgmt) or previous.user != user):
            raise LabError(
                f"lab {self.name!r} is up with subnet {previous.subnet} and user {previous.user}; "
                "run `orch lab down` first to change them"
            )
        if previous is None:
            self._check_subnet(mgmt)
        created_user = previous.created_user if previous else False
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # noqa: S103 - sshd and a non-root user read it
        self._prepare_run_dir()
        if user != "root":
            created_user = self._ensure_user(user) or created_user
            self._sudoers(user, sudo)
        state = previous or LabState(
            name=self.name,
            subnet=str(mgmt),
            user=user,
            sudo=sudo,
            created_user=created_user,
            state_dir=str(self.state_dir),
        )
        state.created_user = created_user
        state.sudo = sudo
        state.save(self.state_file)  # saved early: `down` can clean up after a failed `up`

        key = self.state_dir / "id_ed25519"
        if not key.exists():
            _run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"orch-lab-{self.name}",
                    "-f",
                    str(key),
                ]
            )
        shutil.copyfile(key.with_suffix(".pub"), self.run_dir / "authorized_keys")
        os.chmod(self.run_dir / "authorized_keys", 0o644)
        rootfs = build_rootfs_tar(find_busybox())
        (self.state_dir / PROBE_TAR).write_bytes(rootfs)

        self._bridges(mgmt)
        self._etc_hosts([f"host{k}" for k in range(1, hosts + 1)])
        addresses = {k: str(mgmt.network_address + 100 + k) for k in range(1, hosts + 1)}
        existing = {h.index: h for h in state.hosts}
        for k in range(1, hosts + 1):
            if k not in existing:
                existing[k] = LabHostState(
                    index=k, name=f"host{k}", netns=self.netns(k), address=addresses[k]
                )
        state.hosts = [existing[k] for k in sorted(existing)]
        state.save(self.state_file)

        def one(h: LabHostState) -> None:
            self._host_up(h, mgmt, rootfs, log)

        errors = _parallel(one, state.hosts)
        state.save(self.state_file)
        if errors:
            raise LabError("; ".join(errors) + " (run `orch lab down` to clean up)")
        self._write_known_hosts(state)
        self._write_inventory(state)
        return state

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for path in (RUN_ROOT, self.run_dir):
            os.chmod(path, 0o755)  # noqa: S103 - a non-root SSH user reaches its socket
        mounts = Path("/proc/self/mountinfo").read_text()
        if f" {self.run_dir} " not in mounts:
            # A private bind mount of our own, so that namespace files can be bound under it.
            _run(["mount", "--bind", str(self.run_dir), str(self.run_dir)])
            _run(["mount", "--make-private", str(self.run_dir)])
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        NETNS_DIR.mkdir(parents=True, exist_ok=True)

    def _etc_hosts(self, names: list[str] | None) -> None:
        """Make the hosts' own names resolvable (sudo looks its host name up; without an entry
        it waits for DNS timeouts), in a marked block of /etc/hosts; None removes the block."""
        path = Path("/etc/hosts")
        begin, end = f"# >>> orch-lab {self.name}", f"# <<< orch-lab {self.name}"
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        # Labs going up or down at the same time must not lose each other's blocks.
        with open(RUN_ROOT / ".etc-hosts.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            lines = path.read_text().splitlines()
            if begin in lines and end in lines:
                lines = lines[: lines.index(begin)] + lines[lines.index(end) + 1 :]
            if names:
                lines += [begin, *(f"127.0.1.1 {n}" for n in names), end]
            path.write_text("\n".join(lines) + "\n")

    def _ensure_user(self, user: str) -> bool:
        _run(["groupadd", "-f", "docker"])
        try:
            pwd.getpwnam(user)
            _run(["usermod", "-a", "-G", "docker", user])
            return False
        except KeyError:
            _run(
                [
                    "useradd",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/bin/sh",
                    "-G",
                    "docker",
                    "-p",
                    "*",
                    user,
                ]
            )
            return True

    def _sudoers(self, user: str, sudo: bool) -> None:
        path = Path(f"/etc/sudoers.d/orch-lab-{self.name}")
        if sudo:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{user} ALL=(root) NOPASSWD: ALL\n")
            os.chmod(path, 0o440)
        else:
            path.unlink(missing_ok=True)

    def _bridges(self, mgmt: IPv4Network) -> None:
        links = {link["ifname"] for link in json.loads(_run(["ip", "-j", "link", "show"]))}
        for bridge in (self.mgmt_bridge, self.data_bridge):
            if bridge not in links:
                _run(["ip", "link", "add", bridge, "type", "bridge"])
            _run(["ip", "link", "set", bridge, "up"])
        addr = f"{mgmt.network_address + 1}/{mgmt.prefixlen}"
        current = _run(["ip", "-j", "addr", "show", "dev", self.mgmt_bridge])
        if addr.split("/")[0] not in current:
            _run(["ip", "addr", "add", addr, "dev", self.mgmt_bridge])
        # A root-namespace firewall may drop bridged traffic (bridge-nf-call-iptables): let the
        # lab's own bridges forward, with a rule we remove again on `down`.
        if shutil.which("iptables"):
            for bridge in (self.mgmt_bridge, self.data_bridge):
                rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
                if subprocess.run(["iptables", "-C", *rule], capture_output=True).returncode:
                    _run(["iptables", "-I", *rule], check=False)

    def _host_up(
        self,
        h: LabHostState,
        mgmt: IPv4Network,
        rootfs: bytes,
        log: Callable[[str], None],
    ) -> None:
        k = h.index
        hdir = self.host_dir(k)
        hdir.mkdir(parents=True, exist_ok=True)
        if not (NETNS_DIR / h.netns).exists():
            _run(["ip", "netns", "add", h.netns])
        uts = hdir / "uts"
        if not _is_ns_mount(uts):
            uts.touch()
            _run(["unshare", f"--uts={uts}", "hostname", h.name])
        ns_links = json.loads(_run(["ip", "-n", h.netns, "-j", "link", "show"]))
        names = {link["ifname"] for link in ns_links}
        for nic, which, bridge in (
            (MGMT_NIC, "m", self.mgmt_bridge),
            (DATA_NIC, "d", self.data_bridge),
        ):
            if nic in names:
                continue
            outer = self.veth(k, which)  # type: ignore[arg-type]
            _run(["ip", "link", "del", outer], check=False)
            _run(
                ["ip", "link", "add", outer, "type", "veth", "peer", "name", nic, "netns", h.netns]
            )
            _run(["ip", "link", "set", outer, "master", bridge, "up"])
        _run(["ip", "-n", h.netns, "link", "set", "lo", "up"])
        _run(["ip", "-n", h.netns, "link", "set", MGMT_NIC, "up"])
        _run(["ip", "-n", h.netns, "link", "set", DATA_NIC, "up"])
        addrs = _run(["ip", "-n", h.netns, "-j", "addr", "show", "dev", MGMT_NIC])
        if f'"{h.address}"' not in addrs:
            _run(
                [
                    "ip",
                    "-n",
                    h.netns,
                    "addr",
                    "add",
                    f"{h.address}/{mgmt.prefixlen}",
                    "dev",
                    MGMT_NIC,
                ]
            )
        # No default route: a lab host reaches only its own subnets, so nothing it sends
        # (a DNS query, say) can leave this machine.
        self._start_dockerd(h)
        self._start_sshd(h)
        if not _wait_tcp(h.address, 22, DAEMON_WAIT):
            raise LabError(f"{h.name}: sshd did not listen on {h.address}:22")
        self._wait_docker(h)
        self._load_probe(h, rootfs)
        log(f"{h.name}: up ({h.address})")

    def _owned(self, h: LabHostState, pid: int) -> int:
        """`pid` if it is alive and runs in `h`'s namespace, else 0.

        A PID in lab.json outlives the lab after a reboot (and may then name an unrelated
        process): only a live process inside the host's own namespace is the lab's.
        """
        if not pid_alive(pid):
            return 0
        try:
            same = os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(NETNS_DIR / h.netns).st_ino
        except OSError:
            return 0
        return pid if same else 0

    def _nsenter(self, h: LabHostState) -> list[str]:
        return [
            "nsenter",
            f"--net={NETNS_DIR / h.netns}",
            f"--uts={self.host_dir(h.index) / 'uts'}",
        ]

    def _spawn(self, h: LabHostState, argv: list[str], logname: str) -> int:
        logfile = open(self.host_dir(h.index) / logname, "ab")  # noqa: SIM115
        with logfile:
            proc = subprocess.Popen(
                [*self._nsenter(h), *argv],
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                start_new_session=True,
            )
        return proc.pid

    def _start_dockerd(self, h: LabHostState) -> None:
        if self._owned(h, h.dockerd_pid):
            return
        hdir = self.host_dir(h.index)
        data = self.data_dir / f"h{h.index}"
        data.mkdir(parents=True, exist_ok=True)
        sock = self.docker_sock(h.index)
        sock.unlink(missing_ok=True)
        argv = [
            "dockerd",
            "--data-root",
            str(data),
            "--exec-root",
            str(hdir / "exec"),
            "-H",
            f"unix://{sock}",
            "--pidfile",
            str(hdir / "docker.pid"),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-forward=false",
            "--shutdown-timeout=2",
            "--group",
            "docker" if _group_exists("docker") else "root",
            "--log-level=warn",
        ]
        h.dockerd_pid = self._spawn(h, argv, "dockerd.log")

    def _wait_docker(self, h: LabHostState) -> None:
        sock = self.docker_sock(h.index)
        deadline = time.monotonic() + DAEMON_WAIT
        while time.monotonic() < deadline:
            if docker_ping(sock):
                return
            if not pid_alive(h.dockerd_pid):
                tail = _tail(self.host_dir(h.index) / "dockerd.log")
                raise LabError(f"{h.name}: dockerd exited: {tail}")
            time.sleep(0.05)
        raise LabError(f"{h.name}: dockerd did not answer on {sock} within {DAEMON_WAIT:.0f} s")

    def _start_sshd(self, h: LabHostState) -> None:
        if self._owned(h, h.sshd_pid):
            return
        hdir = self.host_dir(h.index)
        key = hdir / "ssh_host_ed25519_key"
        if not key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", str(key)])
        config = hdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {h.address}:22",
                    f"HostKey {key}",
                    f"PidFile {hdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.run_dir / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "UseDNS no",
                    "MaxSessions 10",
                    "MaxStartups 100:30:200",
                    "LogLevel ERROR",
                    f"SetEnv DOCKER_HOST=unix://{self.docker_sock(h.index)}",
                    "",
                ]
            )
        )
        h.sshd_pid = self._spawn(h, ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], "sshd.log")

    def _load_probe(self, h: LabHostState, rootfs: bytes) -> None:
        sock = f"unix://{self.docker_sock(h.index)}"
        present = subprocess.run(
            ["docker", "-H", sock, "image", "inspect", PROBE_IMAGE], capture_output=True
        )
        if present.returncode == 0:
            return
        _run(["docker", "-H", sock, "import", "-", PROBE_IMAGE], input_=rootfs)

    def _write_known_hosts(self, state: LabState) -> None:
        lines = []
        for h in state.hosts:
            pub = (self.host_dir(h.index) / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{h.address} {pub[0]} {pub[1]}\n")
        (self.state_dir / "known_hosts").write_text("".join(lines))

    def _write_inventory(self, state: LabState) -> None:
        mgmt = ipaddress.ip_network(state.subnet)
        lines = [
            f"# orch lab {self.name!r}: {len(state.hosts)} hosts on management subnet {mgmt}.",
            "# Written by `orch lab up`; `orch lab down` removes it.",
            "",
            "[defaults]",
            f'user = "{state.user}"',
            'identity_file = "id_ed25519"',
            f'parent = "{DATA_NIC}"',
            "",
            "[ssh]",
            'known_hosts = "known_hosts"',
            "connect_timeout = 5",
            "",
        ]
        for h in state.hosts:
            lines += ["[[hosts]]", f'name = "{h.name}"', f'address = "{h.address}"', ""]
        lines += [
            "[[networks]]",
            'name = "mac_net1"',
            'subnet = "172.16.86.0/24"',
            'gateway = "172.16.86.1"',
            "",
            "[verify]",
            f'image = "{PROBE_IMAGE}"',
            "",
        ]
        self.inventory_path.write_text("\n".join(lines))

    # ----------------------------------------------------------------- status
    def status(self) -> list[HostStatus]:
        """Each host's namespace, sshd and dockerd: present/alive or not."""
        state = self.load_state()
        if state is None:
            return []
        out = []
        for h in state.hosts:
            out.append(
                HostStatus(
                    name=h.name,
                    netns=h.netns,
                    address=h.address,
                    netns_present=(NETNS_DIR / h.netns).exists(),
                    sshd_alive=bool(self._owned(h, h.sshd_pid)),
                    dockerd_alive=bool(self._owned(h, h.dockerd_pid)),
                )
            )
        return out

    # ----------------------------------------------------------------- down
    def down(self, log: Callable[[str], None] = lambda _m: None) -> None:
        """Stop what the lab started (by PID) and remove all it made. Idempotent."""
        self.require_root()
        state = self.load_state()
        hosts = state.hosts if state else self._discover_hosts()
        _run(["nft", "delete", "table", "bridge", self.nft_table], check=False)

        def one(h: LabHostState) -> None:
            self._host_down(h)
            log(f"{h.name}: down")

        errors = _parallel(one, hosts)
        for bridge in (self.mgmt_bridge, self.data_bridge):
            _run(["ip", "link", "del", bridge], check=False)
            if shutil.which("iptables"):
                rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
                while (
                    subprocess.run(["iptables", "-D", *rule], capture_output=True).returncode == 0
                ):
                    pass
        Path(f"/etc/sudoers.d/orch-lab-{self.name}").unlink(missing_ok=True)
        self._etc_hosts(None)
        others = [p for p in RUN_ROOT.glob("*") if p.is_dir() and p.name != self.name]
        if state is not None and state.created_user and state.user != "root" and not others:
            _run(["userdel", state.user], check=False)
        self._unmount_under(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if not others:
            (RUN_ROOT / ".etc-hosts.lock").unlink(missing_ok=True)
        for root in (RUN_ROOT, DATA_ROOT):
            with contextlib.suppress(OSError):
                root.rmdir()
        for name in (
            "lab.json",
            "hosts.toml",
            "known_hosts",
            "id_ed25519",
            "id_ed25519.pub",
            PROBE_TAR,
        ):
            (self.state_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()
        if errors:
            raise LabError("; ".join(errors))

    def _discover_hosts(self) -> list[LabHostState]:
        """Hosts of a lab whose state file is gone, found by namespace name and pidfiles."""
        found = []
        prefix = f"orch-{self.name}-h"
        for path in NETNS_DIR.glob(prefix + "*"):
            suffix = path.name[len(prefix) :]
            if suffix.isdigit():
                k = int(suffix)
                found.append(LabHostState(index=k, name=f"host{k}", netns=path.name, address=""))
        for hdir in self.run_dir.glob("h*"):
            suffix = hdir.name[1:]
            if suffix.isdigit() and int(suffix) not in {h.index for h in found}:
                k = int(suffix)
                found.append(
                    LabHostState(index=k, name=f"host{k}", netns=self.netns(k), address="")
                )
        return found

    def _host_down(self, h: LabHostState) -> None:
        hdir = self.host_dir(h.index)
        sshd = self._owned(h, h.sshd_pid or _read_pid(hdir / "sshd.pid"))
        dockerd = self._owned(h, h.dockerd_pid or _read_pid(hdir / "docker.pid"))
        if pid_alive(dockerd) and self.docker_sock(h.index).exists():
            # A container whose PID 1 ignores SIGTERM (a bare `sleep`) would hold the engine's
            # shutdown for its grace period: remove containers first so that the
            # engine stops at once instead of waiting out the grace period.
            sock = f"unix://{self.docker_sock(h.index)}"
            ids = _run(["docker", "-H", sock, "ps", "-aq"], check=False).split()
            if ids:
                _run(["docker", "-H", sock, "rm", "-f", *ids], check=False)
        _stop_pid(sshd)
        _stop_pid(dockerd, timeout=15)
        # Anything still living in the namespace was started by the lab's dockerd (its
        # containerd, shims, containers): end those by PID as well.
        for pid in _pids_in_netns(NETNS_DIR / h.netns):
            _stop_pid(pid, timeout=5)
        self._unmount_under(hdir)
        self._unmount_under(self.data_dir / f"h{h.index}")
        if (NETNS_DIR / h.netns).exists():
            _run(["ip", "netns", "del", h.netns], check=False)
        for which in ("m", "d"):
            _run(["ip", "link", "del", self.veth(h.index, which)], check=False)

    @staticmethod
    def _unmount_under(path: Path) -> None:
        prefix = str(path)
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            _run(["umount", "-l", point], check=False)

    # ----------------------------------------------------------------- faults
    def host(self, name: str) -> LabHostState:
        state = self.load_state()
        if state is None:
            raise LabError(f"lab {self.name!r} is not up; run `orch lab up` first")
        for h in state.hosts:
            if h.name == name:
                return h
        raise LabError(
            f"lab {self.name!r} has no host {name!r}; "
            f"hosts: {', '.join(h.name for h in state.hosts)}"
        )

    def fault(self, host: str, kind: str, on: bool) -> None:
        """Switch a fault on (`on=True`) or heal it on one host."""
        self.require_root()
        if kind not in FAULTS:
            raise LabError(f"unknown fault {kind!r}; use one of: {', '.join(FAULTS)}")
        state = self.load_state()
        h = self.host(host)
        assert state is not None
        if kind in ("data-down", "mgmt-down"):
            nic = DATA_NIC if kind == "data-down" else MGMT_NIC
            _run(["ip", "-n", h.netns, "link", "set", nic, "down" if on else "up"])
        elif kind == "docker-stop":
            if on:
                self._host_stop_docker(h)
            else:
                self._start_dockerd(h)
                self._wait_docker(h)
        elif kind == "sshd-stop":
            if on:
                _crash_sshd(self._owned(h, h.sshd_pid))
            else:
                self._start_sshd(h)
                if not _wait_tcp(h.address, 22, DAEMON_WAIT):
                    raise LabError(f"{h.name}: sshd did not come back")
        elif kind == "mac-filter":
            self._mac_filter(h, on)
        elif kind == "rekey":
            if on:
                key = self.host_dir(h.index) / "ssh_host_ed25519_key"
                key.unlink(missing_ok=True)
                key.with_suffix(".pub").unlink(missing_ok=True)
                _stop_pid(self._owned(h, h.sshd_pid))
                self._start_sshd(h)
                if not _wait_tcp(h.address, 22, DAEMON_WAIT):
                    raise LabError(f"{h.name}: sshd did not come back")
            else:
                self._write_known_hosts(state)
        for i, other in enumerate(state.hosts):
            if other.name == h.name:
                state.hosts[i] = h
        state.save(self.state_file)

    def _host_stop_docker(self, h: LabHostState) -> None:
        sock = f"unix://{self.docker_sock(h.index)}"
        ids = _run(["docker", "-H", sock, "ps", "-q"], check=False).split()
        if ids:
            _run(["docker", "-H", sock, "kill", *ids], check=False)
        _stop_pid(self._owned(h, h.dockerd_pid), timeout=15)

    def _mac_filter(self, h: LabHostState, on: bool) -> None:
        """Emulate a hypervisor NIC in "Deny" mode: the switch port of `h`'s data NIC passes only
        frames for the NIC's own MAC and group addresses."""
        port = self.veth(h.index, "d")
        table = self.nft_table
        if on:
            link = json.loads(_run(["ip", "-n", h.netns, "-j", "link", "show", "dev", DATA_NIC]))
            mac = link[0]["address"]
            _run(["nft", "add", "table", "bridge", table])
            _run(
                [
                    "nft",
                    "add",
                    "chain",
                    "bridge",
                    table,
                    "forward_filter",
                    "{ type filter hook forward priority 0; policy accept; }",
                ]
            )
            _run(
                [
                    "nft",
                    "add",
                    "rule",
                    "bridge",
                    table,
                    "forward_filter",
                    "oifname",
                    port,
                    "ether",
                    "daddr",
                    "!=",
                    mac,
                    "ether",
                    "daddr",
                    "&",
                    "01:00:00:00:00:00",
                    "==",
                    "00:00:00:00:00:00",
                    "drop",
                    "comment",
                    f'"{h.name}"',
                ]
            )
            return
        listing = _run(["nft", "-a", "list", "table", "bridge", table], check=False)
        for line in listing.splitlines():
            if f'comment "{h.name}"' in line and "# handle" in line:
                handle = line.rsplit("# handle", 1)[1].strip()
                _run(["nft", "delete", "rule", "bridge", table, "forward_filter", "handle", handle])

    # ----------------------------------------------------------------- helpers for tests
    def exec_in(self, host: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside a lab host's namespaces (for checks from outside orch)."""
        h = self.host(host)
        return subprocess.run([*self._nsenter(h), *argv], capture_output=True, text=True)


def _parallel(fn: Callable[[LabHostState], None], hosts: list[LabHostState]) -> list[str]:
    errors: list[str] = []
    if not hosts:
        return errors
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = {pool.submit(fn, h): h for h in hosts}
        for fut, h in futures.items():
            exc = fut.exception()
            if exc is not None:
                errors.append(f"{h.name}: {exc}" if not str(exc).startswith(h.name) else str(exc))
    return errors


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _is_ns_mount(path: Path) -> bool:
    return any(
        line.split()[4] == str(path)
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


def _tail(path: Path, n: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


def _descendants(pid: int) -> list[int]:
    """Every living process below `pid` (children, grandchildren, ...), parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def _crash_sshd(pid: int) -> None:
    """Stop the lab sshd `pid` like a crash or reboot would: its listener and every session
    it runs (per-connection sshd processes and their commands), so open connections die too.

    Only `pid` and processes below it are signalled: all of them were started by the lab's sshd.
    """
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)  # no new sessions while we collect its children
    for child in _descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _pids_in_netns(ns_path: Path) -> Iterator[int]:
    try:
        target = os.stat(ns_path).st_ino
    except OSError:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == target:
                yield int(entry.name)
        except OSError:
            continue
