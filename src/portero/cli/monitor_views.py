"""Rich renderings of `portero metrics` and `portero alerts`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from portero.cli.views import STATE_STYLE

ALERT_STYLE = {"firing": "red", "pending": "yellow", "resolved": "green"}
SPARK = "▁▂▃▄▅▆▇█"


def _num(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def snapshot_view(snapshot: dict[str, Any]) -> Group:
    host = snapshot["host"]
    stamp = datetime.fromtimestamp(snapshot["at"]).strftime("%H:%M:%S")
    rx, tx = host["network_receive_bytes_per_second"], host["network_transmit_bytes_per_second"]
    head = Text(
        f"host at {stamp}: cpu {host['cpu_percent']:.1f}% of {host['cpu_count']} cores, "
        f"memory {host['memory_percent']:.1f}%, load {host['load1']:.2f}, disk {host['disk_percent']:.1f}%, "
        f"net in {_num(rx, 1 / 1024)} KiB/s out {_num(tx, 1 / 1024)} KiB/s"
    )
    replicas = Table(title="replicas", title_justify="left")
    for column in ("SERVICE", "REPLICA", "STATE", "CPU %", "MEMORY MiB", "PROCS", "RESTARTS"):
        replicas.add_column(column, justify="left" if column in {"SERVICE", "REPLICA", "STATE"} else "right")
    for r in snapshot["replicas"]:
        style = STATE_STYLE.get(r["state"], "")
        replicas.add_row(
            escape(r["service"]),
            escape(r["id"]),
            f"[{style}]{r['state']}[/]" if style else r["state"],
            _num(r["cpu_percent"]),
            _num(r["memory_bytes"], 1 / (1 << 20)),
            str(r["processes"] if r["processes"] is not None else "-"),
            str(r["restarts"]),
        )
    title = "services (router: req/s of the last interval, 5xx and percentiles of the last 60 s)"
    services = Table(title=title, title_justify="left")
    for column in ("SERVICE", "READY", "REQ/S", "5XX %", "P50 ms", "P95 ms", "P99 ms", "IN FLIGHT", "ANSWERED"):
        services.add_column(column, justify="left" if column == "SERVICE" else "right")
    for s in snapshot["services"]:
        t = s["traffic"] or {}
        services.add_row(
            escape(s["name"]),
            f"{s['ready']}/{s['desired']}",
            _num(t.get("requests_per_second")),
            _num(t.get("error_ratio"), 100),
            _num(t.get("latency_p50_s"), 1000),
            _num(t.get("latency_p95_s"), 1000),
            _num(t.get("latency_p99_s"), 1000),
            str(t.get("in_flight", "-")),
            str(t.get("requests_total", "-")),
        )
    me = snapshot["portero"]
    tail = Text(
        f"portero: cpu {me['cpu_percent']:.1f}%, memory {me['memory_bytes'] / (1 << 20):.0f} MiB, "
        f"{me['series']} series in {me['series_memory_bytes'] / (1 << 20):.1f} of "
        f"{me['series_budget_bytes'] / (1 << 20):.0f} MiB, last pass {me['collect_seconds'] * 1000:.1f} ms"
    )
    return Group(head, replicas, services, tail)


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(int((v - low) / span * len(SPARK)), len(SPARK) - 1)] for v in values)


def series_view(result: dict[str, Any], width: int = 60) -> Table:
    table = Table(title=f"{result['name']} every {result['step_s']:g} s", title_justify="left")
    for column in ("LABELS", "LAST", "MIN", "MAX", "TREND"):
        table.add_column(column, justify="left" if column in {"LABELS", "TREND"} else "right", no_wrap=True)
    for series in result["series"]:
        values = [v for _, v in series["points"]]
        labels = ",".join(f"{k}={v}" for k, v in sorted(series["labels"].items())) or "-"
        if not values:
            table.add_row(escape(labels), "-", "-", "-", "")
            continue
        table.add_row(
            escape(labels),
            f"{values[-1]:.4g}",
            f"{min(values):.4g}",
            f"{max(values):.4g}",
            sparkline(values[-width:]),
        )
    return table


def alerts_table(alerts: list[dict[str, Any]]) -> Table:
    table = Table(title="alerts", title_justify="left")
    for column in ("STATE", "ALERT", "SUBJECT", "VALUE", "SINCE", "SUMMARY"):
        table.add_column(column, no_wrap=column != "SUMMARY")
    for alert in alerts:
        style = ALERT_STYLE.get(alert["state"], "")
        subject = ",".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()) if k not in {"alertname", "severity"})
        since = alert["fired_at"] or alert["active_since"] or ""
        table.add_row(
            f"[{style}]{alert['state']}[/]",
            escape(alert["name"]),
            escape(subject or "host"),
            _num(alert["value"], digits=3),
            since[11:19],
            escape(alert["annotations"].get("summary", "")),
        )
    return table
