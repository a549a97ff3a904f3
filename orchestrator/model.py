"""The validated inventory: frozen value types that the rest of orch trusts.

Nothing here does I/O. `inventory.py` builds these from hosts.toml and checks every field; once a
value sits in one of these types it is known to be safe to quote into a remote command.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Literal

MacvlanMode = Literal["bridge", "private", "vepa", "passthru"]
MACVLAN_MODES: tuple[str, ...] = ("bridge", "private", "vepa", "passthru")

# Labels orch puts on everything it creates on a host, so that status and teardown never touch
# what orch did not make.
LABEL_MANAGED = "io.orch.managed"
LABEL_RANGE = "io.orch.ip-range"
LABEL_PROMISC_BEFORE = "io.orch.promisc-before"
LABEL_PROBE = "io.orch.probe"
LABEL_NETWORK = "io.orch.network"


@dataclass(frozen=True, slots=True)
class Host:
    """One Docker host, reached over SSH."""

    name: str
    address: str
    user: str | None = None  # None: from ~/.ssh/config, else the local user
    port: int | None = None  # None: from ~/.ssh/config, else 22
    identity_file: Path | None = None
    parent: str | None = None  # default parent NIC for this host's networks


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """A macvlan network that must exist, identical but for the range, on every host."""

    name: str
    subnet: IPv4Network
    gateway: IPv4Address
    driver: str = "macvlan"
    mode: MacvlanMode = "bridge"
    parent: str | None = None  # None: each host's own parent
    range_prefix: int | None = None  # prefix length of each host's slice; None: automatic
    reserved: tuple[tuple[str, IPv4Address], ...] = ()  # Docker auxiliary addresses
    ranges: tuple[tuple[str, IPv4Network], ...] = ()  # explicit per-host slices

    def parent_for(self, host: Host) -> str:
        """The parent NIC of this network on `host` (validated to exist at load time)."""
        parent = self.parent or host.parent
        assert parent is not None, "inventory validation guarantees a parent"
        return parent

    def explicit_range(self, host: str) -> IPv4Network | None:
        """The range the inventory fixes for `host`, if any."""
        return dict(self.ranges).get(host)


@dataclass(frozen=True, slots=True)
class SSHSettings:
    """How orch talks SSH: host-key file, timeouts."""

    known_hosts: Path
    connect_timeout: float = 10.0
    command_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class VerifySettings:
    """How `orch verify` probes: image and ping pacing."""

    image: str = "orch-probe:latest"
    count: int = 3
    interval: float = 0.2
    timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class Inventory:
    """A validated hosts.toml."""

    path: Path
    hosts: tuple[Host, ...]
    networks: tuple[NetworkSpec, ...]
    ssh: SSHSettings
    verify: VerifySettings = field(default_factory=VerifySettings)

    def host(self, name: str) -> Host:
        """The host called `name` (KeyError if absent)."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def select(self, names: list[str] | None) -> Inventory:
        """The same inventory restricted to `names` (all hosts when empty or None).

        Raises:
            KeyError: with the first unknown name.
        """
        if not names:
            return self
        known = {h.name for h in self.hosts}
        for name in names:
            if name not in known:
                raise KeyError(name)
        return replace(self, hosts=tuple(h for h in self.hosts if h.name in set(names)))
