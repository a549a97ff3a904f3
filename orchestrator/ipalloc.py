"""Per-host `--ip-range` allocation: disjoint CIDR slices of one subnet (pure).

Docker's IPAM is per host, so two hosts given the same range hand out the same addresses. Each
host therefore gets its own CIDR slice. The hosts are the source of truth: a range a host already
has (observed) or the inventory fixes (explicit) is kept; every other host takes the first free
aligned slice, in inventory order, so adding a host never moves anyone else's range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network

from orchestrator.errors import PlanError


def default_prefix(subnet: IPv4Network, n_hosts: int) -> int:
    """The slice prefix used when the inventory sets none.

    It leaves room for twice as many hosts as the inventory has now (at least 4 slices), and
    never goes below 4 addresses per slice.
    """
    wanted = max(4, 2 * n_hosts)
    bits = (wanted - 1).bit_length()
    return min(subnet.prefixlen + bits, 30)


def allocate(
    subnet: IPv4Network,
    hosts: Sequence[str],
    prefix: int,
    fixed: Mapping[str, IPv4Network],
    network: str = "",
) -> dict[str, IPv4Network]:
    """Give every host in `hosts` a slice of `subnet`.

    Args:
        subnet: the network's subnet.
        hosts: host names in inventory order.
        prefix: the prefix length of a new slice.
        fixed: ranges that must be kept as they are (explicit or already on the host). They may
            have another size than `prefix`; they must lie inside `subnet` and not overlap.
        network: the network's name, for messages.

    Returns:
        host -> range, for every host in `hosts`; fixed ones unchanged.

    Raises:
        PlanError: fixed ranges leave the subnet or overlap, or no free slice is left; the
            message gives the numbers.
    """
    label = f"{network}: " if network else ""
    result: dict[str, IPv4Network] = {}
    taken: list[IPv4Network] = []
    for host in hosts:
        rng = fixed.get(host)
        if rng is None:
            continue
        if not rng.subnet_of(subnet):
            raise PlanError(f"{label}range {rng} of {host} is outside the subnet {subnet}")
        for other, other_rng in result.items():
            if rng.overlaps(other_rng):
                raise PlanError(
                    f"{label}range {rng} of {host} overlaps {other_rng} of {other}; "
                    "give one of them another range"
                )
        result[host] = rng
        taken.append(rng)
    missing = [h for h in hosts if h not in result]
    if not missing:
        return result
    if prefix <= subnet.prefixlen or prefix > 32:
        raise PlanError(f"{label}a /{prefix} slice does not fit in {subnet} more than once")
    free = iter(s for s in subnet.subnets(new_prefix=prefix) if not _overlaps_any(s, taken))
    for i, host in enumerate(missing):
        slice_ = next(free, None)
        if slice_ is None:
            total = 2 ** (prefix - subnet.prefixlen)
            raise PlanError(
                f"{label}{subnet} holds {total} slices of /{prefix}, {len(taken)} range(s) are "
                f"taken and {len(missing) - i} more host(s) need one; use a larger subnet or a "
                "smaller range_size"
            )
        result[host] = slice_
        taken.append(slice_)
    return {h: result[h] for h in hosts}


def _overlaps_any(candidate: IPv4Network, taken: Sequence[IPv4Network]) -> bool:
    return any(candidate.overlaps(t) for t in taken)
