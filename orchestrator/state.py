"""Observed state of a host (pure value types) and the one-round-trip observation script.

`observe_script()` builds one shell script that reports everything orch needs to plan for a host
(user, sudo, every link with `ip -j -d`, Docker API version, the inventory's networks); the
output is parsed by `parse_observation()`. Both are pure; `apply.observe_host` runs it.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any, Literal

from orchestrator.model import LABEL_MANAGED, LABEL_PROMISC_BEFORE, LABEL_RANGE

SudoAbility = Literal["root", "yes", "no"]
MARK = "@@orch@@"
# orch-probe-<network>-<8 hex run id> (see verify.py); a user's "orch-probe-x" is not orch's.
_PROBE_NAME_RE = re.compile(r"orch-probe-[A-Za-z0-9_.-]+-[0-9a-f]{8}")
_PATH_RE = re.compile(r"/[A-Za-z0-9/_.+-]*")
_SUDO: dict[str, SudoAbility] = {"root": "root", "yes": "yes", "no": "no"}


@dataclass(frozen=True, slots=True)
class LinkState:
    """A NIC as `ip -j -d link` shows it."""

    name: str
    up: bool  # administratively up (the UP flag)
    lower_up: bool  # carrier
    promisc: bool  # the PROMISC flag that `ip link set X promisc on` sets
    kind: str = ""  # linkinfo.info_kind (veth, vlan, macvlan, ...)


@dataclass(frozen=True, slots=True)
class AttachedContainer:
    """A container attached to a network."""

    name: str
    ipv4: str
    orch_probe: bool = False


@dataclass(frozen=True, slots=True)
class NetworkState:
    """A Docker network as `docker network inspect` shows it."""

    name: str
    id: str
    driver: str
    subnet: IPv4Network | None
    gateway: IPv4Address | None
    ip_range: IPv4Network | None
    parent: str
    mode: str
    labels: dict[str, str] = field(default_factory=dict)
    containers: tuple[AttachedContainer, ...] = ()
    aux_addresses: dict[str, str] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        """True when orch made this network."""
        return self.labels.get(LABEL_MANAGED) == "true"

    @property
    def promisc_before(self) -> bool | None:
        """The parent's promisc state before orch turned it on (None: unknown)."""
        value = self.labels.get(LABEL_PROMISC_BEFORE)
        return None if value is None else value == "on"

    @property
    def foreign_containers(self) -> tuple[AttachedContainer, ...]:
        """Attached containers that are not orch's probes."""
        return tuple(c for c in self.containers if not c.orch_probe)


@dataclass(frozen=True, slots=True)
class HostState:
    """Everything observed on one host in one round trip."""

    host: str
    user: str
    sudo: SudoAbility
    links: dict[str, LinkState]
    docker_api: str | None  # None: the engine did not answer
    docker_error: str
    networks: dict[str, NetworkState]
    ip_path: str = "/usr/sbin/ip"  # absolute path of `ip` on the host

    @property
    def is_root(self) -> bool:
        return self.sudo == "root"


def promisc_nic(parent: str) -> str:
    """The NIC whose promisc flag matters for `parent` (the base NIC of a VLAN sub-interface)."""
    return parent.split(".", 1)[0] if "." in parent else parent


def observe_script(networks: list[str]) -> str:
    """One POSIX sh script that prints every section `parse_observation` reads.

    Args:
        networks: network names (validated; quoted anyway).
    """
    names = " ".join(shlex.quote(n) for n in networks)
    fmt = shlex.quote("{{.Server.APIVersion}}")
    lines = [
        'PATH="$PATH:/usr/sbin:/sbin"; export PATH',
        f"echo; echo {MARK}user; id -un",
        f"echo; echo {MARK}sudo",
        'if [ "$(id -u)" = 0 ]; then echo root; '
        "elif sudo -n true 2>/dev/null; then echo yes; else echo no; fi",
        # `ip` from the system directories only: it runs as root, so never one from $PATH.
        f"echo; echo {MARK}ip; for d in /usr/sbin /sbin /usr/bin /bin; do "
        '[ -x "$d/ip" ] && echo "$d/ip" && break; done',
        f"echo; echo {MARK}links; ip -j -d link show 2>&1",
        f"echo; echo {MARK}docker; docker version --format {fmt} 2>&1",
    ]
    if networks:
        lines.append(
            f"echo; echo {MARK}networks; docker network inspect --format '{{{{json .}}}}' {names}"
            " 2>/dev/null"
        )
    lines.append(f"echo; echo {MARK}end")
    return "\n".join(lines) + "\n"


def _sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = line[len(MARK) :].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v).strip() for k, v in out.items()}


def parse_links(text: str) -> dict[str, LinkState]:
    """Links from `ip -j -d link show` output (empty when it is not JSON)."""
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    links = {}
    for item in raw if isinstance(raw, list) else []:
        flags = item.get("flags", [])
        name = str(item.get("ifname", ""))
        links[name] = LinkState(
            name=name,
            up="UP" in flags,
            lower_up="LOWER_UP" in flags,
            promisc="PROMISC" in flags,
            kind=str((item.get("linkinfo") or {}).get("info_kind", "")),
        )
    return links


def _net(value: object) -> IPv4Network | None:
    try:
        net = ip_network(str(value), strict=False)
    except ValueError:
        return None
    return net if isinstance(net, IPv4Network) else None


def _addr(value: object) -> IPv4Address | None:
    try:
        addr = ip_address(str(value))
    except ValueError:
        return None
    return addr if isinstance(addr, IPv4Address) else None


def parse_network(raw: dict[str, Any]) -> NetworkState:
    """A NetworkState from the Docker API's network inspect JSON."""
    configs = (raw.get("IPAM") or {}).get("Config") or []
    ipv4: dict[str, Any] = next((c for c in configs if _net(c.get("Subnet")) is not None), {})
    options = raw.get("Options") or {}
    containers = []
    for cid, info in (raw.get("Containers") or {}).items():
        name = str(info.get("Name") or cid[:12])
        containers.append(
            AttachedContainer(
                name=name,
                ipv4=str(info.get("IPv4Address", "")).split("/")[0],
                orch_probe=_PROBE_NAME_RE.fullmatch(name) is not None,
            )
        )
    return NetworkState(
        name=str(raw.get("Name", "")),
        id=str(raw.get("Id", "")),
        driver=str(raw.get("Driver", "")),
        subnet=_net(ipv4.get("Subnet")),
        gateway=_addr(ipv4.get("Gateway")),
        ip_range=_net(ipv4.get("IPRange")) if ipv4.get("IPRange") else None,
        parent=str(options.get("parent", "")),
        mode=str(options.get("macvlan_mode", "bridge")),
        labels={str(k): str(v) for k, v in (raw.get("Labels") or {}).items()},
        containers=tuple(sorted(containers, key=lambda c: c.name)),
        aux_addresses={str(k): str(v) for k, v in (ipv4.get("AuxiliaryAddresses") or {}).items()},
    )


def parse_observation(host: str, text: str) -> HostState:
    """Parse the output of `observe_script()`.

    A missing section (the connection dropped midway) reads as "nothing known"; the Docker
    section keeps the engine's error message for the report.
    """
    sec = _sections(text)
    sudo = sec.get("sudo", "no").splitlines()[-1:] or ["no"]
    docker_out = sec.get("docker", "")
    api = docker_out.splitlines()[-1].strip() if docker_out else ""
    docker_ok = bool(api) and all(part.isdigit() for part in api.split("."))
    networks: dict[str, NetworkState] = {}
    for line in sec.get("networks", "").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            net = parse_network(json.loads(line))
        except ValueError:
            continue
        networks[net.name] = net
    return HostState(
        host=host,
        user=sec.get("user", "").strip(),
        sudo=_SUDO.get(sudo[0], "no"),
        links=parse_links(sec.get("links", "")),
        docker_api=api if docker_ok else None,
        docker_error="" if docker_ok else (docker_out.strip().splitlines() or ["no answer"])[-1],
        networks=networks,
        ip_path=_ip_path(sec.get("ip", "")),
    )


def _ip_path(text: str) -> str:
    """The absolute path `command -v ip` printed, if it is a plain one; else the usual one."""
    lines = text.strip().splitlines()
    path = lines[-1].strip() if lines else ""
    return path if _PATH_RE.fullmatch(path) else "/usr/sbin/ip"


def labels_for(ip_range: IPv4Network, promisc_before: bool) -> dict[str, str]:
    """The labels orch puts on a network it creates."""
    return {
        LABEL_MANAGED: "true",
        LABEL_RANGE: str(ip_range),
        LABEL_PROMISC_BEFORE: "on" if promisc_before else "off",
    }
