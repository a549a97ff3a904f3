"""Load hosts.toml into a validated `Inventory`, reporting every problem at once.

Every value that may later reach a remote shell or the Docker API is checked here against a
strict pattern, so nothing with shell metacharacters, newlines or a leading dash gets further.
Messages have the form `hosts.toml: networks[0].subnet: <what is wrong>; <how to fix>`.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Any, TypeVar, cast

from orchestrator.errors import InventoryError
from orchestrator.model import (
    MACVLAN_MODES,
    Host,
    Inventory,
    MacvlanMode,
    NetworkSpec,
    SSHSettings,
    VerifySettings,
)

DEFAULT_KNOWN_HOSTS = Path("~/.config/orch/known_hosts")

HOST_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# A DNS name (labels of letters, digits and inner dashes) or an IPv4/IPv6 literal, checked apart.
DNS_NAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
# Linux allows more, but orch only accepts names that need no quoting: 1-15 characters.
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
# Docker's own rule for network names (daemon/names: restrictedNamePattern), capped in length.
NETWORK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,63}")
AUX_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
IMAGE_RE = re.compile(r"[a-z0-9][a-z0-9._/-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")

TOP_KEYS = ("defaults", "hosts", "networks", "ssh", "verify")
HOST_KEYS = ("name", "address", "user", "port", "identity_file", "parent")
DEFAULT_KEYS = ("user", "port", "identity_file", "parent")
NETWORK_KEYS = (
    "name",
    "driver",
    "subnet",
    "gateway",
    "parent",
    "mode",
    "range_size",
    "reserved",
    "ranges",
)
SSH_KEYS = ("known_hosts", "connect_timeout", "command_timeout")
VERIFY_KEYS = ("image", "count", "interval", "timeout")
DRIVERS = ("macvlan",)
# Names of the networks every Docker daemon predefines; `docker network create` refuses them.
PREDEFINED_NETWORKS = ("bridge", "host", "none", "default")

T = TypeVar("T")


class _Problems:
    """Collects problems with their field path so that all are reported together."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(_one_line(f"{self.source}: {where}: {message}"))

    def unknown_keys(self, where: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in table:
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            self.add(f"{where}.{key}" if where else key, f"unknown key; {hint}")


def _one_line(text: str) -> str:
    """`text` with control characters escaped (keys and values may hold newlines)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _describe(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return f"a {type(value).__name__} too large to print"
    return text if len(text) <= 60 else text[:57] + "..."


def _str_field(
    p: _Problems, where: str, value: object, pattern: re.Pattern[str], what: str, fix: str
) -> str | None:
    if not isinstance(value, str):
        p.add(where, f"must be a string ({what}), got {_describe(value)}")
        return None
    if not pattern.fullmatch(value):
        p.add(where, f"{_describe(value)} is not a valid {what}; {fix}")
        return None
    return value


def _host_name(p: _Problems, where: str, value: object) -> str | None:
    return _str_field(
        p,
        where,
        value,
        HOST_NAME_RE,
        "host name",
        "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    )


def _address(p: _Problems, where: str, value: object) -> str | None:
    if not isinstance(value, str):
        p.add(where, f"must be a string (IP address or DNS name), got {_describe(value)}")
        return None
    try:
        addr = ip_address(value)
    except ValueError:
        pass
    else:
        scope = addr.scope_id if isinstance(addr, IPv6Address) else None
        if scope is None or IFNAME_RE.fullmatch(scope):
            return str(addr)
    if DNS_NAME_RE.fullmatch(value) and not value.startswith("-"):
        return value
    p.add(where, f"{_describe(value)} is neither an IP address nor a DNS name; e.g. 192.168.56.101")
    return None


def _user(p: _Problems, where: str, value: object) -> str | None:
    return _str_field(
        p,
        where,
        value,
        USER_RE,
        "user name",
        "use letters, digits, '.', '_' or '-', starting with a letter or '_'",
    )


def _ifname(p: _Problems, where: str, value: object) -> str | None:
    name = _str_field(
        p,
        where,
        value,
        IFNAME_RE,
        "interface name",
        "use 1-15 letters, digits, '.', '_' or '-' (e.g. enp0s9 or enp0s9.10)",
    )
    if name in (".", ".."):
        p.add(where, f"{name!r} is not a valid interface name")
        return None
    return name


def _port(p: _Problems, where: str, value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        p.add(where, f"{_describe(value)} is not a TCP port; use a whole number from 1 to 65535")
        return None
    return value


def _positive(
    p: _Problems, where: str, value: object, upper: float, lower: float = 0.0
) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= upper:
        p.add(where, f"{_describe(value)} is out of range; use a number in (0, {upper}]")
        return None
    if value < lower:
        p.add(where, f"{value} is too short; use at least {lower:g} (Fabric rounds down to whole "
              "seconds, and 0 would mean no timeout at all)")  # fmt: skip
        return None
    return float(value)


def _whole_seconds(p: _Problems, where: str, value: object, upper: int) -> float | None:
    # busybox ping's -W takes whole seconds only ("invalid number '0.5'").
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        p.add(where, f"{_describe(value)} is not a whole number of seconds from 1 to {upper} "
              "(ping's -W takes whole seconds)")  # fmt: skip
        return None
    return float(value)


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _path_field(p: _Problems, where: str, value: object, base: Path) -> Path | None:
    if not isinstance(value, str) or not value or "\n" in value or "\0" in value:
        p.add(where, f"{_describe(value)} is not a file path; write one like ~/.ssh/id_ed25519")
        return None
    try:
        return _path(base, value)
    except RuntimeError:  # ~user with no such user, or no home directory
        p.add(where, f"{_describe(value)}: cannot find the home directory; write the full path")
        return None


def _table(p: _Problems, where: str, value: object) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        p.add(where, f"must be a table, got {_describe(value)}")
        return None
    return cast(dict[str, Any], value)


def _optional(
    p: _Problems,
    table: dict[str, Any],
    where: str,
    key: str,
    check: Callable[..., T | None],
    *extra: object,
) -> T | None:
    """Run `check(p, "<where>.<key>", value, *extra)` when the key is present."""
    if key not in table:
        return None
    return check(p, f"{where}.{key}" if where else key, table[key], *extra)


def _network_cidr(p: _Problems, where: str, value: object) -> IPv4Network | None:
    if not isinstance(value, str):
        p.add(where, f"must be a CIDR string such as 172.16.86.0/24, got {_describe(value)}")
        return None
    try:
        net = ip_network(value, strict=False)
    except ValueError:
        p.add(where, f"{_describe(value)} is not a CIDR; write it like 172.16.86.0/24")
        return None
    if not isinstance(net, IPv4Network):
        p.add(where, f"{value} is IPv6; orch handles IPv4 subnets only for now")
        return None
    if "/" not in value:
        p.add(where, f"{value} has no prefix length; did you mean {net.network_address}/24?")
        return None
    if str(net) != value and f"{net.network_address}/{net.prefixlen}" != value:
        p.add(where, f"{value} has host bits set; did you mean {net}?")
        return None
    return net


def _ipv4(p: _Problems, where: str, value: object) -> IPv4Address | None:
    if not isinstance(value, str):
        p.add(where, f"must be a string IPv4 address, got {_describe(value)}")
        return None
    try:
        addr = ip_address(value)
    except ValueError:
        p.add(where, f"{_describe(value)} is not an IPv4 address; write it like 172.16.86.1")
        return None
    if not isinstance(addr, IPv4Address):
        p.add(where, f"{value} is IPv6; orch handles IPv4 only for now")
        return None
    return addr


def _range_prefix(
    p: _Problems, where: str, value: object, subnet: IPv4Network | None
) -> int | None:
    prefix: int | None = None
    if isinstance(value, str) and re.fullmatch(r"/[0-9]{1,2}", value):
        prefix = int(value[1:])
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        size = 1
        while size < value:
            size *= 2
        prefix = 32 - (size.bit_length() - 1)
    if prefix is None or not 1 <= prefix <= 30:
        p.add(
            where,
            f'{_describe(value)} is not a slice size; use a prefix such as "/26" '
            "or a number of addresses per host such as 64",
        )
        return None
    if subnet is not None and prefix <= subnet.prefixlen:
        p.add(
            where,
            f"a /{prefix} slice does not fit in more than once in {subnet}; "
            f"use a prefix longer than /{subnet.prefixlen}",
        )
        return None
    return prefix


def _parse_hosts(
    p: _Problems, raw: object, defaults: dict[str, Any], base: Path, bad_parent: set[str]
) -> list[Host]:
    """The valid hosts; names whose parent is set but invalid go into `bad_parent`."""
    if not isinstance(raw, list) or not raw:
        p.add("hosts", "at least one [[hosts]] table is needed, with name and address")
        return []
    d_user = _optional(p, defaults, "defaults", "user", _user)
    d_port = _optional(p, defaults, "defaults", "port", _port)
    d_key = _optional(p, defaults, "defaults", "identity_file", _path_field, base)
    d_parent = _optional(p, defaults, "defaults", "parent", _ifname)
    hosts: list[Host] = []
    seen_names: dict[str, int] = {}
    seen_addr: dict[tuple[str, int | None], int] = {}
    for i, item in enumerate(raw):
        where = f"hosts[{i}]"
        table = _table(p, where, item)
        if table is None:
            continue
        p.unknown_keys(where, table, HOST_KEYS)
        for required in ("name", "address"):
            if required not in table:
                p.add(f"{where}.{required}", "missing; every host needs a name and an address")
        name = _optional(p, table, where, "name", _host_name)
        address = _optional(p, table, where, "address", _address)
        user = _optional(p, table, where, "user", _user)
        port = _optional(p, table, where, "port", _port)
        key = _optional(p, table, where, "identity_file", _path_field, base)
        parent = _optional(p, table, where, "parent", _ifname)
        if name is not None:
            if name in seen_names:
                p.add(
                    f"{where}.name",
                    f"{name!r} is already the name of hosts[{seen_names[name]}];"
                    " host names must be unique",
                )
            seen_names.setdefault(name, i)
        if address is not None:
            endpoint = (address, port or d_port)
            if endpoint in seen_addr:
                p.add(
                    f"{where}.address",
                    f"{address} is already the address of "
                    f"hosts[{seen_addr[endpoint]}]; each host needs its own address",
                )
            seen_addr.setdefault(endpoint, i)
        if name is None or address is None:
            continue
        if (parent or d_parent) is None and ("parent" in table or "parent" in defaults):
            bad_parent.add(name)  # already reported; "no parent" would only mislead
        hosts.append(
            Host(
                name=name,
                address=address,
                user=user or d_user,
                port=port or d_port,
                identity_file=key or d_key,
                parent=parent or d_parent,
            )
        )
    return hosts


def _parse_reserved(
    p: _Problems, where: str, value: object, subnet: IPv4Network | None
) -> tuple[tuple[str, IPv4Address], ...]:
    pairs: list[tuple[str, object]] = []
    if isinstance(value, list):
        pairs = [(f"reserved{i + 1}", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        for key in value:
            if not AUX_NAME_RE.fullmatch(key):
                p.add(
                    f"{where}.{key}",
                    "is not a valid name for a reserved address; "
                    "use letters, digits, '.', '_' or '-'",
                )
        pairs = [(k, v) for k, v in value.items() if AUX_NAME_RE.fullmatch(k)]
    else:
        p.add(
            where,
            "must be a list of addresses or a table name = address "
            '(e.g. reserved = { router = "172.16.86.254" })',
        )
        return ()
    out: list[tuple[str, IPv4Address]] = []
    for key, raw in pairs:
        addr = _ipv4(p, f"{where}.{key}" if isinstance(value, dict) else where, raw)
        if addr is None:
            continue
        if subnet is not None and addr not in subnet:
            p.add(
                f"{where}.{key}",
                f"{addr} is outside the subnet {subnet}; reserved addresses must lie inside it",
            )
            continue
        out.append((key, addr))
    return tuple(out)


def _parse_ranges(
    p: _Problems, where: str, value: object, subnet: IPv4Network | None, host_names: set[str]
) -> tuple[tuple[str, IPv4Network], ...]:
    table = _table(p, where, value)
    if table is None:
        return ()
    out: list[tuple[str, IPv4Network]] = []
    for host, raw in table.items():
        if host not in host_names:
            close = difflib.get_close_matches(host, sorted(host_names), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "name a host of [[hosts]]"
            p.add(f"{where}.{host}", f"no host is called {host!r}; {hint}")
            continue
        net = _network_cidr(p, f"{where}.{host}", raw)
        if net is None:
            continue
        if subnet is not None and not net.subnet_of(subnet):
            p.add(f"{where}.{host}", f"{net} is not inside the subnet {subnet}; pick a slice of it")
            continue
        for other, taken in out:
            if net.overlaps(taken):
                p.add(
                    f"{where}.{host}",
                    f"{net} overlaps the range of {other} ({taken}); "
                    "per-host ranges must not overlap",
                )
                break
        else:
            out.append((host, net))
    return tuple(out)


def _parse_networks(
    p: _Problems, raw: object, hosts: list[Host], host_names: set[str], bad_parent: set[str]
) -> list[NetworkSpec]:
    if not isinstance(raw, list) or not raw:
        p.add("networks", "at least one [[networks]] table is needed (name, subnet, ...)")
        return []
    networks: list[NetworkSpec] = []
    names: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"networks[{i}]"
        table = _table(p, where, item)
        if table is None:
            continue
        p.unknown_keys(where, table, NETWORK_KEYS)
        for required in ("name", "subnet"):
            if required not in table:
                p.add(f"{where}.{required}", "missing; every network needs a name and a subnet")
        name = _optional(
            p,
            table,
            where,
            "name",
            _str_field,
            NETWORK_NAME_RE,
            "Docker network name",
            "use 2-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
        if name in PREDEFINED_NETWORKS:
            p.add(
                f"{where}.name",
                f"{name!r} is a network Docker predefines and refuses to create; pick another name",
            )
            name = None
        if name is not None:
            if name in names:
                p.add(
                    f"{where}.name",
                    f"{name!r} is already networks[{names[name]}]; network names must be unique",
                )
            names.setdefault(name, i)
        driver = table.get("driver", "macvlan")
        if driver not in DRIVERS:
            p.add(
                f"{where}.driver",
                f"{_describe(driver)} is not supported; use one of: {', '.join(DRIVERS)}",
            )
        mode = table.get("mode", "bridge")
        if mode not in MACVLAN_MODES:
            p.add(
                f"{where}.mode",
                f"{_describe(mode)} is not a macvlan mode; use one of: {', '.join(MACVLAN_MODES)}",
            )
        subnet = _optional(p, table, where, "subnet", _network_cidr)
        if subnet is not None and subnet.prefixlen > 29:
            p.add(
                f"{where}.subnet",
                f"{subnet} is too small to share between hosts; use /29 or larger",
            )
            subnet = None
        gateway: IPv4Address | None = None
        if "gateway" in table:
            gateway = _ipv4(p, f"{where}.gateway", table["gateway"])
            if (
                gateway is not None
                and subnet is not None
                and (
                    gateway not in subnet
                    or gateway in (subnet.network_address, subnet.broadcast_address)
                )
            ):
                p.add(
                    f"{where}.gateway",
                    f"{gateway} is not a usable address of {subnet}; "
                    f"use one such as {subnet.network_address + 1}",
                )
                gateway = None
        elif subnet is not None:
            gateway = subnet.network_address + 1
        parent = _optional(p, table, where, "parent", _ifname)
        prefix = _optional(p, table, where, "range_size", _range_prefix, subnet)
        reserved = (
            _parse_reserved(p, f"{where}.reserved", table["reserved"], subnet)
            if "reserved" in table
            else ()
        )
        ranges = (
            _parse_ranges(p, f"{where}.ranges", table["ranges"], subnet, host_names)
            if "ranges" in table
            else ()
        )
        if parent is None and "parent" not in table:
            for host in hosts:
                if host.parent is None and host.name not in bad_parent:
                    p.add(
                        f"{where}.parent",
                        f"no parent NIC for host {host.name!r}; set parent "
                        "here, in [defaults] or on the host",
                    )
        if gateway is not None:
            for owner, net in ranges:
                if gateway in net:
                    p.add(
                        f"{where}.ranges.{owner}",
                        f"{net} contains the gateway {gateway}; move the gateway or the range",
                    )
        if None in (name, subnet, gateway) or driver not in DRIVERS or mode not in MACVLAN_MODES:
            continue
        assert name is not None and subnet is not None and gateway is not None
        networks.append(
            NetworkSpec(
                name=name,
                subnet=subnet,
                gateway=gateway,
                driver=driver,
                mode=cast(MacvlanMode, mode),
                parent=parent,
                range_prefix=prefix,
                reserved=reserved,
                ranges=ranges,
            )
        )
    for a in range(len(networks)):
        for b in range(a + 1, len(networks)):
            if networks[a].subnet.overlaps(networks[b].subnet):
                p.add(
                    f"networks[{b}].subnet",
                    f"{networks[b].subnet} overlaps the subnet of "
                    f"{networks[a].name} ({networks[a].subnet}); Docker refuses overlapping "
                    "pools on one host",
                )
    return networks


def parse_inventory(data: dict[str, Any], path: Path) -> Inventory:
    """Validate a parsed TOML document.

    Args:
        data: the document as tomllib returns it.
        path: where it came from (names the source in messages, anchors relative paths).

    Returns:
        The validated inventory.

    Raises:
        InventoryError: listing every problem found.
    """
    p = _Problems(path.name)
    base = path.parent
    p.unknown_keys("", data, TOP_KEYS)
    defaults = _table(p, "defaults", data.get("defaults", {})) or {}
    p.unknown_keys("defaults", defaults, DEFAULT_KEYS)
    bad_parent: set[str] = set()
    hosts = _parse_hosts(p, data.get("hosts"), defaults, base, bad_parent)
    host_names = {h.name for h in hosts}
    networks = _parse_networks(p, data.get("networks"), hosts, host_names, bad_parent)

    ssh_raw = _table(p, "ssh", data.get("ssh", {})) or {}
    p.unknown_keys("ssh", ssh_raw, SSH_KEYS)
    known = _optional(p, ssh_raw, "ssh", "known_hosts", _path_field, base)
    connect_timeout = _optional(p, ssh_raw, "ssh", "connect_timeout", _positive, 600, 1.0)
    command_timeout = _optional(p, ssh_raw, "ssh", "command_timeout", _positive, 3600, 1.0)
    ssh = SSHSettings(
        known_hosts=known or DEFAULT_KNOWN_HOSTS.expanduser(),
        connect_timeout=connect_timeout or 10.0,
        command_timeout=command_timeout or 60.0,
    )

    verify_raw = _table(p, "verify", data.get("verify", {})) or {}
    p.unknown_keys("verify", verify_raw, VERIFY_KEYS)
    image = _optional(
        p,
        verify_raw,
        "verify",
        "image",
        _str_field,
        IMAGE_RE,
        "image reference",
        "use a name such as orch-probe:latest (lower case, no spaces)",
    )
    count = verify_raw.get("count", 3)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        p.add("verify.count", f"{_describe(count)} is out of range; use a whole number 1-100")
        count = 3
    interval = _optional(p, verify_raw, "verify", "interval", _positive, 10)
    ping_timeout = _optional(p, verify_raw, "verify", "timeout", _whole_seconds, 60)
    # Not VerifySettings.image: with slots=True that is the slot descriptor, not the default.
    default_verify = VerifySettings()
    verify = VerifySettings(
        image=image or default_verify.image,
        count=count,
        interval=interval or default_verify.interval,
        timeout=ping_timeout or default_verify.timeout,
    )
    # The pings of one probe are one script whose answer must come within the command timeout.
    longest = verify.count * verify.interval + verify.timeout + 2
    if longest > ssh.command_timeout:
        p.add("verify.count", f"{verify.count} pings every {verify.interval:g} s can take "
              f"{longest:g} s, longer than ssh.command_timeout ({ssh.command_timeout:g} s); "
              "ping less or raise the timeout")  # fmt: skip
    if p.items:
        raise InventoryError(p.items)
    return Inventory(
        path=path, hosts=tuple(hosts), networks=tuple(networks), ssh=ssh, verify=verify
    )


def load_inventory(path: Path) -> Inventory:
    """Read and validate hosts.toml at `path`.

    Raises:
        InventoryError: the file is missing, is not TOML, or is invalid (every problem listed).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InventoryError(
            [f"{path}: no such file; pass -i FILE, or run `orch lab up` for a local lab"]
        ) from None
    except OSError as exc:
        raise InventoryError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InventoryError([f"{path.name}: not UTF-8 text; save it as UTF-8"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError([_one_line(f"{path.name}: not valid TOML: {exc}")]) from None
    except ValueError:  # tomllib lets int()'s digit limit through
        raise InventoryError(
            [f"{path.name}: not valid TOML: a number has too many digits"]
        ) from None
    except RecursionError:
        raise InventoryError(
            [f"{path.name}: not valid TOML: arrays or tables nested too deeply"]
        ) from None
    return parse_inventory(data, path)
