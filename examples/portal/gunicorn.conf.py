"""gunicorn settings for the portal; command-line flags (e.g. --bind) take precedence.

gunicorn reads ./gunicorn.conf.py from the directory it starts in (as in the Docker image);
from elsewhere pass it explicitly: ``-c examples/portal/gunicorn.conf.py`` (--chdir is not enough).
"""

import glob
import os
import shutil
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT') or '5000'}"
workers = int(os.environ.get("WEB_CONCURRENCY") or "2")
graceful_timeout = 10
# /wait may hold a sync worker for up to 60 s; the default 30 s timeout would kill it mid-request.
timeout = 75
accesslog = "-"
# Replicas on one host would all claim the same default control socket path; the portal needs none.
control_socket_disable = True

# Prometheus multiprocess mode for the app's /metrics (portero.resilience): each worker writes its values to files
# here and /metrics, served by any worker, adds them up; one worker would see only its own. One fresh directory per
# gunicorn master (replicas on one host must not share one), set before the workers import prometheus_client.
# A master killed with SIGKILL never runs on_exit: its directory, named for its pid, is removed by the next master
# that finds that pid gone (the kill tests left 755 of them in /tmp).
PREFIX = "portal-metrics-"


def _remove_orphans() -> None:
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{PREFIX}*-*")):
        pid = os.path.basename(path)[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(path, ignore_errors=True)


if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _remove_orphans()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    try:
        from prometheus_client import multiprocess
    except ImportError:  # the Docker image: no /metrics
        return
    multiprocess.mark_process_dead(worker.pid)  # its live gauges no longer count


def on_exit(server):  # type: ignore[no-untyped-def]
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
