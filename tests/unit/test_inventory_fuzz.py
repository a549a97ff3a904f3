"""Fuzzing the inventory loader: it returns an Inventory or raises InventoryError, nothing else."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InventoryError
from orchestrator.inventory import load_inventory, parse_inventory
from orchestrator.model import Inventory

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TEXT = (REPO / "hosts.toml").read_text(encoding="utf-8")
SOURCE = Path("/inv/hosts.toml")

FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

VALID: dict[str, Any] = {
    "defaults": {"user": "vagrant", "identity_file": "keys/id", "parent": "enp0s9", "port": 22},
    "ssh": {"known_hosts": "kh", "connect_timeout": 10, "command_timeout": 60},
    "hosts": [
        {"name": "host1", "address": "192.168.56.101"},
        {"name": "host2", "address": "192.168.56.102", "user": "u", "parent": "eth1"},
    ],
    "networks": [
        {
            "name": "mac_net1",
            "driver": "macvlan",
            "subnet": "172.16.86.0/24",
            "gateway": "172.16.86.1",
            "mode": "bridge",
            "parent": "enp0s9.10",
            "range_size": "/26",
            "reserved": {"router": "172.16.86.254"},
            "ranges": {"host1": "172.16.86.64/26"},
        },
        {"name": "mac_net2", "subnet": "10.9.0.0/16"},
    ],
    "verify": {"image": "orch-probe:latest", "count": 3, "interval": 0.2, "timeout": 1},
}

KNOWN_KEYS = sorted(
    {
        "defaults", "hosts", "networks", "ssh", "verify", "name", "address", "user", "port",
        "identity_file", "parent", "driver", "subnet", "gateway", "mode", "range_size",
        "reserved", "ranges", "known_hosts", "connect_timeout", "command_timeout", "image",
        "count", "interval", "timeout", "host1", "host2", "router", "subnett", "adress",
    }
)  # fmt: skip
# Strings that are almost, or exactly, what some field wants, to get past the first checks.
NEAR_MISSES = [
    "172.16.86.0/24", "172.16.86.5/24", "172.16.86.0", "172.16.86.0/255.255.255.0",
    "10.0.0.0/8", "0.0.0.0/0", "172.16.86.64/26", "172.16.86.1", "fd00::/64", "fe80::1%eth0",
    "fe80::1%a;b", "fe80::%a\nb/64", "::1", "host1", "host2", "enp0s9", "enp0s9.10", "/26",
    "/0", "/30", "/\u0662\u0666", "~/x", "~nosuchuser_orch/x", "~", "", "-", ".", "..",
    "$(touch /tmp/x)", "a\nb", "macvlan", "bridge", "private", "orch-probe:latest",
    "h\u00f4st", "\u2028", "\x00", "a" * 300,
]  # fmt: skip

keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8)
texts = st.sampled_from(NEAR_MISSES) | st.text(max_size=20)
leaves = (
    texts
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.datetimes()
    | st.dates()
    | st.times()
)
tomlish = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=10,
)
documents = st.dictionaries(keys, tomlish, max_size=5)
# A document shaped like an inventory, whose tables and lists hold random things.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "defaults": st.dictionaries(keys, leaves, max_size=4),
        "hosts": st.lists(st.dictionaries(keys, leaves, max_size=6), max_size=3),
        "networks": st.lists(st.dictionaries(keys, tomlish, max_size=8), max_size=2),
        "ssh": st.dictionaries(keys, leaves, max_size=3),
        "verify": st.dictionaries(keys, leaves, max_size=4),
    },
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value (table entry or list item) in `node`."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        out.append((*prefix, key))
        if isinstance(child, dict | list):
            out.extend(_paths(child, (*prefix, key)))
    return out


VALID_PATHS = _paths(VALID)
DELETE = object()


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """VALID with one to three fields replaced by random values (or deleted)."""
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(VALID_PATHS))
        node: Any = data
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this path
        if not isinstance(node, dict | list):
            continue  # replaced by a string, which can be indexed but not changed
        value = draw(st.just(DELETE) | tomlish)
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return data


def _check_problems(problems: list[str], source: str) -> None:
    assert problems, "InventoryError without problems"
    for line in problems:
        assert isinstance(line, str)
        assert line.startswith(f"{source}: "), line
        assert len(line.splitlines()) == 1, line
        assert line.isprintable(), line


def _parse_or_error(data: dict[str, Any]) -> None:
    try:
        inv = parse_inventory(data, SOURCE)
    except InventoryError as exc:
        _check_problems(exc.problems, "hosts.toml")
        assert str(exc) == "\n".join(exc.problems)
    else:
        assert isinstance(inv, Inventory)
        assert inv.hosts
        assert inv.networks
        for net in inv.networks:
            for host in inv.hosts:
                assert net.parent_for(host)


def test_the_valid_document_parses() -> None:
    _parse_or_error(copy.deepcopy(VALID))
    assert isinstance(parse_inventory(copy.deepcopy(VALID), SOURCE), Inventory)


@FUZZ
@given(documents)
def test_random_documents(data: dict[str, Any]) -> None:
    _parse_or_error(data)


@FUZZ
@given(shaped)
def test_random_inventory_shaped_documents(data: dict[str, Any]) -> None:
    _parse_or_error(data)


@settings(FUZZ, max_examples=150)
@given(mutated())
def test_valid_documents_with_fields_replaced(data: dict[str, Any]) -> None:
    _parse_or_error(data)


# --- through a file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inventory_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "hosts.toml"


def _load_or_error(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        inv = load_inventory(path)
    except InventoryError as exc:
        _check_problems(exc.problems, path.name)
    else:
        assert isinstance(inv, Inventory)


@st.composite
def edited_example(draw: st.DrawFn) -> bytes:
    """The example hosts.toml with a few random byte-level edits."""
    data = bytearray(EXAMPLE_TEXT.encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 8))
        insert = draw(
            st.binary(max_size=8)
            | st.sampled_from([b"[", b"]", b"=", b'"', b"\n", b"[[hosts]]\n", b"{", b"#"])
            | st.sampled_from(NEAR_MISSES).map(lambda s: s.encode("utf-8"))
        )
        data[at : at + cut] = insert
    return bytes(data)


@FUZZ
@given(content=st.binary(max_size=200))
def test_random_bytes_through_a_file(inventory_file: Path, content: bytes) -> None:
    _load_or_error(inventory_file, content)


@FUZZ
@given(content=st.text(max_size=200))
def test_random_text_through_a_file(inventory_file: Path, content: str) -> None:
    _load_or_error(inventory_file, content.encode("utf-8"))


@settings(FUZZ, max_examples=150)
@given(content=edited_example())
def test_edited_example_through_a_file(inventory_file: Path, content: bytes) -> None:
    _load_or_error(inventory_file, content)


@pytest.mark.parametrize(
    "when", [dt.datetime(2024, 1, 1), dt.date(2024, 1, 1), dt.time(1, 2)], ids=str
)
def test_toml_dates_in_string_fields_are_rejected(when: object) -> None:
    data = copy.deepcopy(VALID)
    data["hosts"][0]["address"] = when
    with pytest.raises(InventoryError) as info:
        parse_inventory(data, SOURCE)
    assert info.value.problems[0].startswith("hosts.toml: hosts[0].address: must be a string")
