"""Render plans, reports, status and the connectivity matrix as tables or JSON (pure).

Tables use tabulate; color (ANSI) only when asked for, i.e. when stdout is a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tabulate import tabulate

from orchestrator.apply import HostReport
from orchestrator.ops import HostStatusReport, TrustResult
from orchestrator.plan import Plan

GREEN, RED, YELLOW, DIM, RESET = "\033[32m", "\033[31m", "\033[33m", "\033[2m", "\033[0m"


def paint(text: str, color: str, enabled: bool) -> str:
    return f"{color}{text}{RESET}" if enabled else text


def to_json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


ACTION_WORDS = {
    "set_promisc": "promisc on",
    "create_network": "create",
    "replace_network": "REPLACE",
    "remove_network": "remove",
    "restore_promisc": "promisc off",
    "noop": "ok",
    "conflict": "CONFLICT",
    "error": "ERROR",
}


def plan_table(plan: Plan, color: bool = False) -> str:
    rows = []
    for c in plan.changes:
        word = ACTION_WORDS[c.action]
        tint = GREEN if c.action == "noop" else RED if c.action in ("conflict", "error") else YELLOW
        rows.append([c.host, paint(word, tint, color), c.target, c.reason])
    table = tabulate(rows, headers=["host", "action", "target", "reason"], tablefmt="simple")
    n = sum(1 for c in plan.changes if c.changes_host)
    blocked = sum(1 for c in plan.changes if c.action in ("conflict", "error"))
    summary = f"{n} change(s)" + (f", {blocked} blocked" if blocked else "")
    return f"{table}\n\n{summary}"


def report_table(reports: Sequence[HostReport], color: bool = False) -> str:
    rows = []
    for r in reports:
        tint = {"changed": YELLOW, "unchanged": GREEN, "failed": RED}[r.status]
        if r.status == "failed":
            detail = r.error
            if r.rolled_back:
                detail += f" [rolled back: {'; '.join(r.rolled_back)}]"
        elif r.status == "changed":
            detail = "; ".join(f"{ACTION_WORDS[c.action]} {c.target}" for c in r.done)
        else:
            detail = "in sync"
        rows.append([r.host, paint(r.status, tint, color), detail])
    table = tabulate(rows, headers=["host", "result", "detail"], tablefmt="simple")
    failed = sum(1 for r in reports if r.status == "failed")
    changed = sum(len(r.done) for r in reports)
    summary = f"{len(reports) - failed}/{len(reports)} host(s) converged, {changed} change(s) made"
    return f"{table}\n\n{summary}"


def reports_json(plan: Plan, reports: Sequence[HostReport]) -> str:
    return to_json(
        {
            "ok": all(r.status != "failed" for r in reports),
            "changes": [c.as_dict() for c in plan.changes if c.changes_host],
            "hosts": [r.as_dict() for r in reports],
        }
    )


def status_table(reports: Sequence[HostStatusReport], color: bool = False) -> str:
    rows = []
    for r in reports:
        if not r.reachable:
            rows.append([r.host, "-", "-", paint("unreachable", RED, color), r.error, ""])
            continue
        nic_text = ", ".join(
            f"{n} {'UP' if up else 'DOWN'}{' PROMISC' if pr else ''}" for n, up, pr in r.nics
        )
        for i, net in enumerate(r.networks):
            tint = GREEN if net.state == "in sync" else RED
            rows.append(
                [
                    r.host if i == 0 else "",
                    nic_text if i == 0 else "",
                    net.name,
                    paint(net.state, tint, color),
                    net.ip_range if net.ip_range != "-" else "",
                    "; ".join(net.containers) or net.detail,
                ]
            )
    return tabulate(
        rows,
        headers=["host", "parent", "network", "state", "range", "containers / detail"],
        tablefmt="simple",
    )


def trust_table(results: Sequence[TrustResult], color: bool = False) -> str:
    rows = [
        [r.host, paint("trusted" if r.ok else "refused", GREEN if r.ok else RED, color), r.message]
        for r in results
    ]
    return tabulate(rows, headers=["host", "result", "host key / reason"], tablefmt="simple")
