"""Rendering plans, reports, status and trust results as tables or JSON."""

from __future__ import annotations

import json
from ipaddress import IPv4Network

from orchestrator.apply import HostReport
from orchestrator.ops import HostStatusReport, NetworkStatus, TrustResult
from orchestrator.plan import Change, Plan
from orchestrator.render import (
    ACTION_WORDS,
    GREEN,
    RED,
    RESET,
    YELLOW,
    paint,
    plan_table,
    report_table,
    reports_json,
    status_table,
    to_json,
    trust_table,
)

ESC = "\033["

PROMISC = Change("host1", "set_promisc", "enp0s9", "enp0s9 is not in promiscuous mode")
CREATE = Change(
    "host1",
    "create_network",
    "mac_net1",
    "absent; create on enp0s9 with range 172.16.86.0/26",
    ip_range=IPv4Network("172.16.86.0/26"),
)
NOOP = Change("host2", "noop", "mac_net1", "in sync, range 172.16.86.64/26")
CONFLICT = Change("host3", "conflict", "mac_net1", "drift: mode private (want bridge)")
ERROR = Change("host4", "error", "-", "cannot connect to vagrant@192.168.56.104:22")
PLAN = Plan((PROMISC, CREATE, NOOP, CONFLICT, ERROR))

REPORTS = [
    HostReport("host1", "changed", done=(PROMISC, CREATE)),
    HostReport("host2", "unchanged"),
    HostReport(
        "host3",
        "failed",
        error="Docker refused: Pool overlaps",
        rolled_back=("promisc off enp0s9",),
    ),
]


def test_every_action_has_a_word() -> None:
    from typing import get_args

    from orchestrator.plan import Action

    assert set(ACTION_WORDS) == set(get_args(Action))


def test_paint() -> None:
    assert paint("x", RED, False) == "x"
    assert paint("x", RED, True) == f"{RED}x{RESET}"


def test_plan_table_lists_hosts_actions_and_reasons() -> None:
    text = plan_table(PLAN)
    assert ESC not in text
    lines = text.splitlines()
    assert lines[0].split() == ["host", "action", "target", "reason"]
    for host in ("host1", "host2", "host3", "host4"):
        assert any(line.startswith(host) for line in lines)
    for word in ("promisc on", "create", "ok", "CONFLICT", "ERROR"):
        assert word in text
    assert "absent; create on enp0s9 with range 172.16.86.0/26" in text
    assert lines[-1] == "2 change(s), 2 blocked"


def test_plan_table_summary_without_blocks() -> None:
    assert plan_table(Plan((NOOP,))).splitlines()[-1] == "0 change(s)"


def test_plan_table_color_only_when_asked() -> None:
    colored = plan_table(PLAN, color=True)
    assert f"{YELLOW}create{RESET}" in colored
    assert f"{GREEN}ok{RESET}" in colored
    assert f"{RED}CONFLICT{RESET}" in colored
    assert f"{RED}ERROR{RESET}" in colored
    assert ESC not in plan_table(PLAN, color=False)


def test_report_table() -> None:
    text = report_table(REPORTS)
    assert ESC not in text
    lines = text.splitlines()
    row1 = next(line for line in lines if line.startswith("host1"))
    assert "changed" in row1 and "promisc on enp0s9; create mac_net1" in row1
    row2 = next(line for line in lines if line.startswith("host2"))
    assert "unchanged" in row2 and "in sync" in row2
    row3 = next(line for line in lines if line.startswith("host3"))
    assert "failed" in row3
    assert "Docker refused: Pool overlaps [rolled back: promisc off enp0s9]" in row3
    assert lines[-1] == "2/3 host(s) converged, 2 change(s) made"


def test_report_table_color_only_when_asked() -> None:
    colored = report_table(REPORTS, color=True)
    assert f"{YELLOW}changed{RESET}" in colored
    assert f"{GREEN}unchanged{RESET}" in colored
    assert f"{RED}failed{RESET}" in colored


def test_reports_json_shape() -> None:
    data = json.loads(reports_json(PLAN, REPORTS))
    assert set(data) == {"ok", "changes", "hosts"}
    assert data["ok"] is False
    assert data["changes"] == [PROMISC.as_dict(), CREATE.as_dict()]  # only what changes hosts
    assert [h["host"] for h in data["hosts"]] == ["host1", "host2", "host3"]
    h1, _h2, h3 = data["hosts"]
    assert set(h1) == {"host", "status", "done", "error", "rolled_back"}
    assert h1["status"] == "changed"
    assert [d["action"] for d in h1["done"]] == ["set_promisc", "create_network"]
    assert h3["error"] == "Docker refused: Pool overlaps"
    assert h3["rolled_back"] == ["promisc off enp0s9"]


def test_reports_json_ok_when_nothing_failed() -> None:
    data = json.loads(reports_json(Plan((NOOP,)), [HostReport("host2", "unchanged")]))
    assert data == {
        "ok": True,
        "changes": [],
        "hosts": [
            {"host": "host2", "status": "unchanged", "done": [], "error": "", "rolled_back": []}
        ],
    }


def test_to_json_is_indented_and_keeps_order() -> None:
    assert to_json({"b": 1, "a": [1]}) == '{\n  "b": 1,\n  "a": [\n    1\n  ]\n}'


STATUS = [
    HostStatusReport(
        "host1",
        True,
        user="root",
        nics=(("enp0s9", True, True),),
        networks=(
            NetworkStatus("mac_net1", "in sync", "", "172.16.86.0/26", ("web 172.16.86.2",)),
            NetworkStatus("mac_net2", "absent", "run orch setup", "-", ()),
        ),
    ),
    HostStatusReport(
        "host2",
        True,
        nics=(("enp0s9", False, False),),
        networks=(
            NetworkStatus("mac_net1", "drift", "mode private (want bridge)", "172.16.86.64/26", ()),
        ),
    ),
    HostStatusReport("host3", False, error="cannot connect to vagrant@192.168.56.103:22"),
]


def test_status_table() -> None:
    text = status_table(STATUS)
    assert ESC not in text
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["host", "parent", "network", "state"]
    row = next(line for line in lines if line.startswith("host1"))
    assert "enp0s9 UP PROMISC" in row and "in sync" in row and "web 172.16.86.2" in row
    absent = next(line for line in lines if "mac_net2" in line)
    assert absent.startswith(" ")  # the host is named once
    assert "absent" in absent and "run orch setup" in absent
    row2 = next(line for line in lines if line.startswith("host2"))
    assert "enp0s9 DOWN" in row2 and "PROMISC" not in row2 and "drift" in row2
    assert "mode private (want bridge)" in row2
    row3 = next(line for line in lines if line.startswith("host3"))
    assert "unreachable" in row3 and "cannot connect" in row3


def test_status_table_color_only_when_asked() -> None:
    colored = status_table(STATUS, color=True)
    assert f"{GREEN}in sync{RESET}" in colored
    assert f"{RED}drift{RESET}" in colored
    assert f"{RED}unreachable{RESET}" in colored


def test_status_json_shape() -> None:
    data = json.loads(to_json({"hosts": [r.as_dict() for r in STATUS]}))
    h1 = data["hosts"][0]
    assert h1["nics"] == [{"name": "enp0s9", "up": True, "promisc": True}]
    assert h1["networks"][0] == {
        "name": "mac_net1",
        "state": "in sync",
        "detail": "",
        "ip_range": "172.16.86.0/26",
        "containers": ["web 172.16.86.2"],
    }
    assert data["hosts"][2]["reachable"] is False


def test_trust_table() -> None:
    results = [
        TrustResult("host1", True, "ssh-ed25519 SHA256:abc"),
        TrustResult("host2", False, "SSH host key of 192.168.56.102 CHANGED"),
    ]
    text = trust_table(results)
    assert ESC not in text
    assert "trusted" in text and "refused" in text
    assert "SHA256:abc" in text and "CHANGED" in text
    colored = trust_table(results, color=True)
    assert f"{GREEN}trusted{RESET}" in colored and f"{RED}refused{RESET}" in colored
