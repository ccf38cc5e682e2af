"""Rich renderings shared by `status`, `up`'s live view and `scale`."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from rich.table import Table

STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "pending": "yellow",
    "unhealthy": "red",
    "backoff": "red",
    "stopping": "magenta",
    "stopped": "dim",
}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def status_table(services: list[dict[str, Any]]) -> Table:
    table = Table(title="portero status", title_justify="left")
    nodes = any(replica.get("node") for service in services for replica in service["replicas"])
    columns = ["SERVICE", "REPLICA", "REV", "STATE", "ADDRESS", *(["NODE"] if nodes else []), "PID", "UPTIME"]
    for column in (*columns, "RESTARTS", "CPU", "MEM"):
        right = column in {"REV", "PID", "RESTARTS", "CPU", "MEM"}
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for service in services:
        summary = f"{service['name']} ({service['ready']}/{service['desired']} ready)"
        for index, replica in enumerate(service["replicas"]):
            state = replica["state"]
            if replica.get("next_start_in_s") is not None:
                state += f" ({replica['next_start_in_s']:.0f}s)"
            table.add_row(
                escape(summary) if index == 0 else "",
                escape(replica["id"]),
                str(replica["revision"]),
                f"[{STATE_STYLE.get(replica['state'], 'white')}]{escape(state)}[/]",
                escape(replica["address"] or "-"),
                *([escape(replica.get("node") or "-")] if nodes else []),
                str(replica["pid"] or "-"),
                duration(replica["uptime_s"]),
                str(replica["restarts"]),
                "-" if replica.get("cpu_percent") is None else f"{replica['cpu_percent']:.1f}%",
                "-" if replica.get("memory_bytes") is None else f"{replica['memory_bytes'] / 2**20:.1f} MiB",
            )
        if not service["replicas"]:
            table.add_row(escape(summary), *["-"] * (len(columns) + 2))
    return table


def endpoints_table(servers: list[dict[str, Any]]) -> Table:
    """The router's endpoints with what they failed: a fault is a try the endpoint failed (docs/router.md)."""
    table = Table(title="router endpoints", title_justify="left")
    for column in ("SERVICE", "ENDPOINT", "STATE", "WEIGHT", "IN FLIGHT", "REQUESTS", "5XX", "FAULTS", "EJECTED"):
        right = column in {"WEIGHT", "IN FLIGHT", "REQUESTS", "5XX", "EJECTED"}
        table.add_column(column, justify="right" if right else "left", no_wrap=column != "FAULTS")
    for server in servers:
        state = server["state"] + (" (ejected)" if server["ejected"] else "")
        faults = ", ".join(f"{kind} {count}" for kind, count in server["faults"].items() if count) or "-"
        table.add_row(
            escape(server["service"]),
            escape(server["address"]),
            escape(state),
            str(server["weight"]),
            str(server["in_flight"]),
            str(server["requests"]),
            str(server["responses"].get("5xx", 0)),
            escape(faults),
            str(server["ejections"]),
        )
    return table


def events_table(events: list[dict[str, Any]], title: str = "events") -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    for column in ("TIME", "KIND", "SUBJECT", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for event in events:
        stamp = time.strftime("%H:%M:%S", time.localtime(event["at"]))
        table.add_row(stamp, *(escape(str(event[k])) for k in ("kind", "subject", "message")))
    return table


def revisions_table(revisions: list[dict[str, Any]]) -> Table:
    table = Table(title="revisions", title_justify="left")
    for column in ("REV", "VERSION", "DIGEST", "CREATED", "REASON", ""):
        table.add_column(column)
    for r in revisions:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        table.add_row(
            str(r["number"]),
            escape(r["version"] or "-"),
            r["digest"],
            created,
            escape(r["reason"]),
            "[green]serving[/]" if r["serving"] else "",
        )
    return table


def deployments_table(deployments: list[dict[str, Any]]) -> Table:
    table = Table(title="deployments", title_justify="left")
    for column in ("ID", "KIND", "REVISIONS", "STRATEGY", "STATE", "TOOK", "FAILED", "P95", "QUEUE P95", "REASON"):
        table.add_column(column)
    for d in deployments:
        took = duration((d["finished_at"] or time.time()) - d["started_at"])
        table.add_row(
            escape(d["id"]),
            d["kind"],
            f"{d['from_revision']} -> {d['to_revision']}",
            d["strategy"],
            d["state"],
            took,
            str(d["failed_requests"]),
            *analysis_cells(d.get("analysis")),
            escape(d["reason"]),
        )
    return table


def analysis_cells(figures: dict[str, Any] | None) -> tuple[str, str]:
    """The p95 the analysis judged (at the new revision's endpoints) and, apart, the router's queue p95 with how
    many requests waited there; "-" where there was nothing to measure."""
    if figures is None:
        return "-", "-"
    p95, queue_p95 = figures["p95_s"], figures["queue_p95_s"]
    judged = "-" if p95 is None else f"{p95 * 1000:.0f} ms"
    queue = "-" if queue_p95 is None else f"{queue_p95 * 1000:.0f} ms ({figures['queued']} waited)"
    return judged, queue


def decisions_table(decisions: list[dict[str, Any]]) -> Table:
    table = Table(title="decisions", title_justify="left", show_edge=False)
    for column in ("TIME", "", "REASON"):
        table.add_column(column, overflow="fold")
    for d in decisions:
        stamp = time.strftime("%H:%M:%S", time.localtime(d["at"]))
        mark = "[green]scaled[/]" if d["changed"] else "[yellow]held[/]"
        table.add_row(stamp, mark, escape(d["reason"]))
    return table
