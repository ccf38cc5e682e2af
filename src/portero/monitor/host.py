"""The host and portero's own process, through psutil: the one module of the monitor that reads the OS.

Replicas are measured by their runtime (`Runtime.stats`), never here. Every call is blocking and cheap (a few
reads of /proc); the monitor runs it in a worker thread. CPU percentages are since the previous call, as
psutil's `interval=None` readings are, so the first one is primed at construction.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psutil

from portero.monitor.snapshot import HostSample


class HostSampler:
    def __init__(self, disk_path: Path) -> None:
        self.disk_path = disk_path
        self.cpu_count = psutil.cpu_count() or 1
        self._lock = threading.Lock()  # psutil's cpu_percent(None) keeps its baseline in the module
        self._process = psutil.Process(os.getpid())
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)
        self._net: tuple[float, int, int] | None = None

    def host(self, now: float) -> HostSample:
        with self._lock:
            cpu = psutil.cpu_percent(interval=None)
        memory = psutil.virtual_memory()
        load1, load5, load15 = os.getloadavg()
        try:
            disk = psutil.disk_usage(str(self.disk_path))
            disk_numbers = (disk.percent, disk.used, disk.total)
        except OSError:
            disk_numbers = (0.0, 0, 0)
        net = psutil.net_io_counters()
        received, sent = (net.bytes_recv, net.bytes_sent) if net is not None else (0, 0)
        rx_rate = tx_rate = None
        if self._net is not None and now > self._net[0]:
            elapsed = now - self._net[0]
            rx_rate = max(received - self._net[1], 0) / elapsed
            tx_rate = max(sent - self._net[2], 0) / elapsed
        self._net = (now, received, sent)
        return HostSample(
            cpu_percent=cpu,
            cpu_count=self.cpu_count,
            memory_percent=memory.percent,
            memory_used_bytes=memory.total - memory.available,
            memory_total_bytes=memory.total,
            load1=load1,
            load5=load5,
            load15=load15,
            disk_path=str(self.disk_path),
            disk_percent=disk_numbers[0],
            disk_used_bytes=disk_numbers[1],
            disk_total_bytes=disk_numbers[2],
            network_receive_bytes_per_second=rx_rate,
            network_transmit_bytes_per_second=tx_rate,
            network_receive_bytes_total=received,
            network_transmit_bytes_total=sent,
        )

    def portero(self) -> tuple[float, int]:
        """portero's own CPU (percent of one core, since the previous call) and resident memory."""
        with self._process.oneshot():
            return self._process.cpu_percent(interval=None), self._process.memory_info().rss

    def cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system
