"""Per-host --ip-range allocation: disjoint, stable slices of one subnet."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import PlanError
from orchestrator.ipalloc import allocate, default_prefix

N = IPv4Network
SUBNET = N("172.16.86.0/24")

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- examples ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "hosts", "prefix"),
    [
        ("172.16.86.0/24", 1, 26),
        ("172.16.86.0/24", 2, 26),
        ("172.16.86.0/24", 3, 27),
        ("172.16.86.0/24", 4, 27),
        ("172.16.86.0/24", 5, 28),
        ("172.16.86.0/24", 64, 30),
        ("10.0.0.0/16", 2, 18),
        ("10.0.0.0/16", 20, 22),
        ("172.16.86.0/29", 1, 30),
        ("172.16.86.0/29", 8, 30),
    ],
)
def test_default_prefix(subnet: str, hosts: int, prefix: int) -> None:
    assert default_prefix(N(subnet), hosts) == prefix


def test_two_hosts_in_a_24_get_the_first_two_26s() -> None:
    prefix = default_prefix(SUBNET, 2)
    assert allocate(SUBNET, ["host1", "host2"], prefix, {}) == {
        "host1": N("172.16.86.0/26"),
        "host2": N("172.16.86.64/26"),
    }


def test_three_hosts_in_a_24_get_27s() -> None:
    hosts = ["a", "b", "c"]
    result = allocate(SUBNET, hosts, default_prefix(SUBNET, 3), {})
    assert result == {
        "a": N("172.16.86.0/27"),
        "b": N("172.16.86.32/27"),
        "c": N("172.16.86.64/27"),
    }
    assert list(result) == hosts


def test_explicit_and_observed_ranges_are_kept() -> None:
    fixed = {"b": N("172.16.86.0/26"), "c": N("172.16.86.200/29")}
    result = allocate(SUBNET, ["a", "b", "c", "d"], 26, fixed)
    assert result == {
        "a": N("172.16.86.64/26"),
        "b": N("172.16.86.0/26"),
        "c": N("172.16.86.200/29"),
        "d": N("172.16.86.128/26"),
    }
    assert list(result) == ["a", "b", "c", "d"]


def test_a_fixed_range_of_another_size_blocks_every_slice_it_touches() -> None:
    fixed = {"a": N("172.16.86.32/27"), "b": N("172.16.86.128/25")}
    result = allocate(SUBNET, ["a", "b", "c"], 26, fixed)
    assert result["c"] == N("172.16.86.64/26")
    assert allocate(SUBNET, ["a", "b", "c"], 27, fixed)["c"] == N("172.16.86.0/27")
    with pytest.raises(PlanError):
        allocate(SUBNET, ["a", "b", "c"], 25, fixed)


def test_all_hosts_fixed_needs_no_valid_prefix() -> None:
    fixed = {"a": N("172.16.86.0/25"), "b": N("172.16.86.128/25")}
    assert allocate(SUBNET, ["a", "b"], 24, fixed) == fixed
    assert allocate(SUBNET, ["a", "b"], 40, fixed) == fixed


def test_adding_a_host_never_moves_existing_ranges() -> None:
    two = allocate(SUBNET, ["host1", "host2"], default_prefix(SUBNET, 2), {})
    # The new host makes the default slice smaller; the observed /26s stay where they are.
    three = allocate(SUBNET, ["host1", "host2", "host3"], default_prefix(SUBNET, 3), two)
    assert {h: three[h] for h in two} == two
    assert three["host3"] == N("172.16.86.128/27")
    # A host put first in the inventory does not push the others either.
    first = allocate(SUBNET, ["host0", "host1", "host2"], 26, two)
    assert {h: first[h] for h in two} == two
    assert first["host0"] == N("172.16.86.128/26")
    # Without observed ranges, appending keeps the first-fit order too.
    assert allocate(SUBNET, ["host1", "host2", "host3"], 26, {})["host2"] == two["host2"]


def test_allocating_the_result_again_changes_nothing() -> None:
    fixed = {"c": N("172.16.86.16/28")}
    once = allocate(SUBNET, ["a", "b", "c", "d"], 27, fixed)
    assert allocate(SUBNET, ["a", "b", "c", "d"], 27, once) == once
    assert allocate(SUBNET, ["a", "b", "c", "d"], 26, once) == once


def test_full_subnet_error_gives_the_numbers() -> None:
    hosts = [f"h{i}" for i in range(5)]
    with pytest.raises(PlanError) as info:
        allocate(SUBNET, hosts, 26, {}, network="mac_net1")
    assert str(info.value) == (
        "mac_net1: 172.16.86.0/24 holds 4 slices of /26, 4 range(s) are taken and 1 more "
        "host(s) need one; use a larger subnet or a smaller range_size"
    )


def test_full_subnet_error_counts_fixed_ranges() -> None:
    fixed = {"a": N("172.16.86.0/25"), "b": N("172.16.86.128/26")}
    with pytest.raises(PlanError) as info:
        allocate(SUBNET, ["a", "b", "c", "d", "e"], 26, fixed)
    message = str(info.value)
    assert message.startswith("172.16.86.0/24 holds 4 slices of /26, 3 range(s) are taken")
    assert "2 more host(s) need one" in message


def test_fixed_range_outside_the_subnet() -> None:
    with pytest.raises(PlanError, match=r"^n1: range 10\.0\.0\.0/26 of a is outside the subnet"):
        allocate(SUBNET, ["a", "b"], 26, {"a": N("10.0.0.0/26")}, network="n1")
    with pytest.raises(PlanError, match="outside the subnet"):
        allocate(SUBNET, ["a"], 26, {"a": N("172.16.0.0/16")})


def test_fixed_ranges_that_overlap() -> None:
    fixed = {"a": N("172.16.86.0/25"), "b": N("172.16.86.64/26")}
    with pytest.raises(PlanError, match=r"range 172\.16\.86\.64/26 of b overlaps .* of a"):
        allocate(SUBNET, ["a", "b"], 26, fixed)


@pytest.mark.parametrize("prefix", [0, 23, 24, 33])
def test_a_slice_that_does_not_fit_more_than_once(prefix: int) -> None:
    with pytest.raises(PlanError, match=rf"a /{prefix} slice does not fit in 172\.16\.86\.0/24"):
        allocate(SUBNET, ["a"], prefix, {})


def test_host_order_is_kept_and_fixed_ranges_of_other_hosts_are_ignored() -> None:
    result = allocate(SUBNET, ["b", "a"], 26, {"zz": N("172.16.86.0/26")})
    assert list(result) == ["b", "a"]
    assert set(result) == {"a", "b"}


# --- properties ----------------------------------------------------------------------------------


def free_aligned_slices(subnet: IPv4Network, prefix: int, taken: Sequence[IPv4Network]) -> int:
    """How many aligned /prefix slices of `subnet` overlap none of `taken` (counted apart)."""
    if not subnet.prefixlen < prefix <= 32:
        return 0
    size = 2 ** (32 - prefix)
    base = int(subnet.network_address)
    spans = sorted(
        (
            (int(t.network_address) - base) // size,
            (int(t.broadcast_address) - base) // size,
        )
        for t in taken
    )
    blocked = 0
    end = -1
    for first, last in spans:
        first = max(first, end + 1)
        if last >= first:
            blocked += last - first + 1
            end = last
    total: int = 2 ** (prefix - subnet.prefixlen)
    return total - blocked


@st.composite
def subnets(draw: st.DrawFn) -> IPv4Network:
    plen = draw(st.integers(16, 29))
    addr = draw(st.integers(0, 2**32 - 1))
    return IPv4Network((addr >> (32 - plen) << (32 - plen), plen))


host_names = st.lists(
    st.text(alphabet="abcdefgh0123456789-", min_size=1, max_size=4),
    min_size=1,
    max_size=20,
    unique=True,
)


@st.composite
def fixed_ranges(
    draw: st.DrawFn, subnet: IPv4Network, hosts: Sequence[str]
) -> dict[str, IPv4Network]:
    """Disjoint ranges inside `subnet` for some of `hosts`, of any size."""
    owners = draw(st.lists(st.sampled_from(list(hosts)), unique=True, max_size=len(hosts)))
    out: dict[str, IPv4Network] = {}
    for owner in owners:
        plen = draw(st.integers(subnet.prefixlen, 32))
        index = draw(st.integers(0, 2 ** (plen - subnet.prefixlen) - 1))
        start = int(subnet.network_address) + index * 2 ** (32 - plen)
        rng = IPv4Network((start, plen))
        if not any(rng.overlaps(other) for other in out.values()):
            out[owner] = rng
    return out


def check_allocation(
    subnet: IPv4Network,
    hosts: Sequence[str],
    prefix: int,
    fixed: Mapping[str, IPv4Network],
    result: dict[str, IPv4Network],
) -> None:
    assert list(result) == list(hosts)
    ranges = list(result.values())
    for i, a in enumerate(ranges):
        assert a.subnet_of(subnet), (a, subnet)
        for b in ranges[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    for host in hosts:
        if host in fixed:
            assert result[host] == fixed[host]
        else:
            assert result[host].prefixlen == prefix


def expect_room(
    subnet: IPv4Network, hosts: Sequence[str], prefix: int, fixed: Mapping[str, IPv4Network]
) -> bool:
    """Whether the hosts without a fixed range fit in the free aligned slices."""
    missing = [h for h in hosts if h not in fixed]
    taken = [fixed[h] for h in hosts if h in fixed]
    return not missing or len(missing) <= free_aligned_slices(subnet, prefix, taken)


@PROPS
@given(st.data(), subnets(), host_names)
def test_allocation_properties(data: st.DataObject, subnet: IPv4Network, hosts: list[str]) -> None:
    prefix = data.draw(
        st.integers(subnet.prefixlen - 2, min(32, subnet.prefixlen + 10)) | st.just(33),
        label="prefix",
    )
    fixed = data.draw(fixed_ranges(subnet, hosts), label="fixed")
    room = expect_room(subnet, hosts, prefix, fixed)
    try:
        result = allocate(subnet, hosts, prefix, fixed, network="net")
    except PlanError as exc:
        assert not room, f"PlanError although there is room: {exc}"
        assert str(exc).startswith("net: ")
        return
    assert room
    check_allocation(subnet, hosts, prefix, fixed, result)

    # Stable: the result, taken as what the hosts already have, is kept as it is.
    assert allocate(subnet, hosts, prefix, result) == result
    assert allocate(subnet, hosts, prefix, {**fixed, **result}) == result

    # Appending a host keeps every previous assignment, with or without the result as fixed.
    new = "new-host"
    grown = [*hosts, new]
    for kept in (fixed, result):
        try:
            again = allocate(subnet, grown, prefix, kept)
        except PlanError:
            assert not expect_room(subnet, grown, prefix, kept)
            continue
        assert expect_room(subnet, grown, prefix, kept)
        check_allocation(subnet, grown, prefix, kept, again)
        assert {h: again[h] for h in hosts} == result

    # The default slice shrinks as hosts are added; ranges the hosts already have stay put.
    new_prefix = default_prefix(subnet, len(grown))
    try:
        again = allocate(subnet, grown, new_prefix, result)
    except PlanError:
        assert not expect_room(subnet, grown, new_prefix, result)
    else:
        assert {h: again[h] for h in hosts} == result


@PROPS
@given(subnets(), st.integers(1, 40))
def test_the_default_prefix_always_fits_when_the_subnet_is_big_enough(
    subnet: IPv4Network, n: int
) -> None:
    prefix = default_prefix(subnet, n)
    assert subnet.prefixlen < prefix <= 30
    hosts = [f"h{i}" for i in range(n)]
    if n <= 2 ** (prefix - subnet.prefixlen):
        result = allocate(subnet, hosts, prefix, {})
        check_allocation(subnet, hosts, prefix, {}, result)
        # Room for twice as many hosts, unless the 4-address floor stops it.
        assert 2 ** (prefix - subnet.prefixlen) >= 2 * n or prefix == 30
    else:
        assert prefix == 30
        with pytest.raises(PlanError, match=re.escape(f"holds {2 ** (30 - subnet.prefixlen)}")):
            allocate(subnet, hosts, prefix, {})


def test_free_aligned_slices_oracle() -> None:
    assert free_aligned_slices(SUBNET, 26, []) == 4
    assert free_aligned_slices(SUBNET, 26, [N("172.16.86.0/25")]) == 2
    assert free_aligned_slices(SUBNET, 26, [N("172.16.86.8/29"), N("172.16.86.16/29")]) == 3
    assert free_aligned_slices(SUBNET, 26, [N("172.16.86.8/29"), N("172.16.86.200/29")]) == 2
    assert free_aligned_slices(SUBNET, 24, []) == 0
    assert free_aligned_slices(SUBNET, 33, []) == 0
