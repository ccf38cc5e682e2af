"""The process runtime (the embedded default): each replica an OS process group on its own loopback port.

Each replica runs under `portero.runtimes.shim`, which leads the process group, owns the app's output and
writes its exit status, so replicas outlive a killed portero and are adopted by the next one. The shim is a
subreaper: whatever the app starts stays under it, even a process that left the group with setsid.
Stopping climbs the stop ladder (`ladder.py`): SIGTERM to the shim (relayed to the app), the grace period, then
SIGKILL to the shim's whole tree and group, so that no worker of the app is left behind; the exit names what had to be
killed. A replica gets a clean environment (`environment.py`) and, as root, runs as the spec's user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from string import Template

import psutil

from portero import statedir
from portero.replicas import Process
from portero.runtimes import accounts, ladder
from portero.runtimes.base import Exit, Launch, Progress, RuntimeFailure, Stats
from portero.runtimes.environment import replica_environment
from portero.runtimes.ports import free_port
from portero.spec.models import ProcessSettings, ServiceSpec

log = logging.getLogger(__name__)
POLL_S = 0.05
LEFTOVER_GRACE_MAX_S = 10.0  # what a crashed app leaves (orphaned workers) finishes its requests within this
TREE_REFRESH_S = 5.0  # a replica's process tree is listed again at least this often (new workers show up)
# A SIGKILLed process dies when it next runs: on a busy machine the app was still running after its shim had
# exited and `stop` had returned (2 of 12 runs beside two busy loops). `stop` waits this long for the tree too.
TREE_EXIT_S = 2.0


def cannot_run(program: str, path: str, workdir: Path) -> str | None:
    """Why exec would refuse `program`, or None: found as the replica's exec finds it (a name with a slash
    from the workdir, the replica's cwd; a bare name along PATH), then executable by this process."""
    if "/" in program:
        candidates = [workdir / program]
    else:
        candidates = [workdir / folder / program for folder in path.split(os.pathsep)]  # absolute folders win
    files = [c for c in candidates if c.is_file()]
    if any(os.access(f, os.X_OK) for f in files):
        return None
    if files:  # the shell says "Permission denied" (126): there is a file, it cannot be run
        mode = files[0].stat().st_mode & 0o7777
        return f"not executable: {program!r} ({files[0]}, mode {mode:04o}; chmod +x it or name its interpreter)"
    if "/" in program:
        return f"command not found: {program!r} (no such file: {candidates[0]})"
    return f"command not found: {program!r} (PATH={path})"


class ProcessRuntime:
    name = "process"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        log_max_bytes: int = 10 * 1024 * 1024,
        kill_wait_s: float = ProcessSettings().kill_wait_s,
    ) -> None:
        self.kill_wait_s = kill_wait_s  # the ladder's last rung; `portero down` counts it in
        self.root = state_dir.resolve() / "replicas"  # absolute: replicas run in their own workdir
        self.host = host
        self.log_max_bytes = log_max_bytes
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # started by this portero: reap them
        self._ports: dict[str, int] = {}  # given to live replicas; never handed out twice
        # psutil objects kept per replica so that cpu_percent measures since the previous call
        self._sampled: dict[int, dict[int, psutil.Process]] = {}
        self._listed_at: dict[int, float] = {}  # when each replica's process tree was last listed (monotonic)
        self._killed: dict[str, list[str]] = {}  # processes of a replica portero had to SIGKILL, for its exit
        self._warned_root: set[str] = set()
        # Called as soon as a replica's process ends (the supervisor's wake): a pidfd turns readable then, so a
        # crash is seen at once rather than at the supervisor's next pass (up to TICK_S later).
        self.exit_hooks: list[Callable[[], None]] = []

    def _dir(self, replica_id: str) -> Path:
        return self.root / replica_id

    def log_path(self, replica_id: str) -> Path:
        return self._dir(replica_id) / "replica.log"

    async def prepare(self, service: str, spec: ServiceSpec, base_dir: Path, progress: Progress | None) -> ServiceSpec:
        """A command needs nothing made beforehand; its user must exist (else the spec is refused)."""
        accounts.resolve(spec)
        if os.geteuid() == 0 and spec.user is None and service not in self._warned_root:
            self._warned_root.add(service)
            log.warning(
                "replicas of %s run as root, as portero does: they can read the state directory (the admin token) "
                "and do anything on this host. Set services.%s.user (docs/security.md)",
                service,
                service,
                extra={"service": service},
            )
        return spec

    async def health(self, replica_id: str, process: Process) -> bool | None:
        return None  # portero's HTTP check decides

    async def start(self, launch: Launch) -> Process:
        try:
            port = free_port(self.host, avoid=set(self._ports.values()))
        except OSError as exc:
            raise RuntimeFailure(f"no free port for replica {launch.replica_id}: {exc}", retryable=True) from exc
        account = accounts.resolve(launch.spec) if launch.spec is not None else None
        env = self._environment(launch, port, account)
        argv = [Template(arg).safe_substitute(env) for arg in launch.command]
        if launch.workdir is not None and not launch.workdir.is_dir():
            raise RuntimeFailure(f"workdir does not exist: {launch.workdir}", retryable=False)
        why = cannot_run(argv[0], env["PATH"], launch.workdir or Path.cwd())
        if why is not None:
            raise RuntimeFailure(why, retryable=False)
        folder = self._dir(launch.replica_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "exit.json").unlink(missing_ok=True)
        shim = [sys.executable, "-m", "portero.runtimes.shim", "--log", str(self.log_path(launch.replica_id))]
        shim += ["--max-bytes", str(self.log_max_bytes), "--exit-file", str(folder / "exit.json")]
        shim += ["--umask", f"{statedir.app_umask():o}"]
        if launch.spec is not None:  # what the app leaves behind gets the stop's grace (capped) before SIGKILL
            shim += ["--leftover-grace", f"{min(launch.spec.stop_grace_s, LEFTOVER_GRACE_MAX_S):g}"]
        if account is not None:
            shim += [
                "--uid",
                str(account.uid),
                "--gid",
                str(account.gid),
                "--groups",
                ",".join(map(str, account.groups)),
            ]
        shim.append("--")
        self._killed.pop(launch.replica_id, None)
        try:
            with (folder / "shim.err").open("ab") as shim_errors:  # the shim's own failures, if any
                child = subprocess.Popen(  # noqa: ASYNC220 - fork+exec only; it returns at once
                    shim + argv,
                    cwd=launch.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=shim_errors,
                    start_new_session=True,  # own session and process group: killpg reaches every worker
                )
        except OSError as exc:
            raise RuntimeFailure(f"cannot start the replica shim: {exc}", retryable=True) from exc
        self._children[child.pid] = child
        self._ports[launch.replica_id] = port
        self._watch(child.pid)
        token = psutil.Process(child.pid).create_time()
        return Process(host=self.host, port=port, pid=child.pid, started_token=token)

    def _environment(self, launch: Launch, port: int, account: accounts.Account | None) -> dict[str, str]:
        # Tools installed beside portero (a venv's gunicorn) are found without activating it.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
        own = {
            "PORT": str(port),
            "PORTERO_REPLICA_ID": launch.replica_id,
            "PORTERO_SERVICE": launch.service,
            "PORTERO_REVISION": str(launch.revision),
        }
        return replica_environment(os.environ | {"PATH": path}, launch.env, own, account)

    async def poll(self, replica_id: str, process: Process) -> Exit | None:
        child = self._children.get(process.pid)
        if child is not None:
            code = child.poll()
            if code is None:
                return None
            del self._children[process.pid]
            self._kill_group(process.pid)  # the shim ended what the app left (shim.py); this is the safety net
        elif self._is_same(process):
            return None
        else:
            code = None
            self._kill_leftovers(process)
        self._sampled.pop(process.pid, None)
        self._listed_at.pop(process.pid, None)
        self._ports.pop(replica_id, None)
        return self._read_exit(replica_id, code)

    def _read_exit(self, replica_id: str, code: int | None) -> Exit:
        killed = tuple(self._killed.get(replica_id, ()))
        try:
            data = json.loads((self._dir(replica_id) / "exit.json").read_text())
            killed = tuple(str(k) for k in data.get("killed", ())) + killed
            return Exit(code=int(data["code"]), signal=data.get("signal"), ran_s=data.get("ran_s"), killed=killed)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the shim itself was killed before it could write
        if code is None:
            return Exit(code=-1, killed=killed)  # gone while no portero watched it, without a word: unknown
        return Exit(code=128 - code, signal=-code, killed=killed) if code < 0 else Exit(code=code, killed=killed)

    def _is_same(self, process: Process) -> bool:
        try:
            leader = psutil.Process(process.pid)
            return leader.create_time() == process.started_token and leader.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _kill_group(self, pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def _kill_tree(self, pid: int) -> tuple[list[str], list[psutil.Process]]:
        """SIGKILL the shim, the group it leads and every process under it (those that left the group with
        setsid are under it too: the shim is their subreaper); returns what was killed besides the shim, described
        and as processes."""
        try:
            tree = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            tree = []
        killed = []
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                killed.append(f"{proc.pid} {' '.join(proc.cmdline())[:80]}".rstrip())
        self._kill_group(pid)
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        return killed, tree

    def _kill_leftovers(self, process: Process) -> None:
        """Workers left by an adopted replica whose leader died. Linux does not hand out a pid while a process
        group still uses it, so if another live process now has the leader's pid, the group is a stranger's."""
        try:
            if psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE:
                return  # recycled: not ours to touch
        except psutil.NoSuchProcess:
            pass
        self._kill_group(process.pid)

    async def reap_strays(self, known: set[str]) -> list[str]:
        """Shims of this state directory that no record knows (portero died between spawn and save): kill them."""
        marker = str(self.root) + os.sep
        strays = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            command = proc.info["cmdline"] or []
            if "portero.runtimes.shim" not in command or "--log" not in command:
                continue
            log_path = command[command.index("--log") + 1] if command.index("--log") + 1 < len(command) else ""
            if not log_path.startswith(marker):
                continue
            replica_id = Path(log_path).parent.name
            if replica_id not in known:
                self._kill_tree(proc.pid)
                strays.append(replica_id)
        return strays

    async def adopt(self, replica_id: str, process: Process) -> bool:
        if not self._is_same(process):
            return False
        self._ports[replica_id] = process.port
        self._watch(process.pid)
        return True

    def _watch(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # an old kernel, or gone already: the supervisor's pass still sees the exit
            return
        try:
            asyncio.get_running_loop().add_reader(fd, self._ended, fd)
        except RuntimeError:  # no running loop (a synchronous caller): the same
            os.close(fd)

    def _ended(self, fd: int) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        for hook in self.exit_hooks:
            hook()

    async def stop(self, replica_id: str, process: Process, grace_s: float) -> Exit | None:
        if not self._is_same(process):
            return await self.poll(replica_id, process)

        async def send(action: str) -> None:
            if action == "SIGKILL":  # the shim's whole tree and group: no worker of the app is left behind
                self._killed[replica_id], tree = self._kill_tree(process.pid)
                await asyncio.to_thread(_await_exit, tree, TREE_EXIT_S)
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.Signals[action])

        return await ladder.climb(
            replica_id,
            ladder.ladder("SIGTERM", grace_s, self.kill_wait_s),
            send,
            lambda: self.poll(replica_id, process),
            what=f"pid {process.pid}",
            interval=POLL_S,
        )

    async def stats(self, replica_id: str, process: Process) -> Stats:
        return await asyncio.to_thread(self._stats, process)

    def _stats(self, process: Process) -> Stats:
        known = self._sampled.get(process.pid, {})
        tree = self._tree(process.pid, known)
        procs = {p.pid: known.get(p.pid, p) for p in tree}
        fresh = [p for pid, p in procs.items() if pid not in known]
        for proc in fresh:
            _cpu(proc)  # the first reading only primes the counter
        if fresh:
            time.sleep(0.1)
        self._sampled[process.pid] = procs
        cpu = memory = 0.0
        for proc in procs.values():
            cpu += _cpu(proc)
            with contextlib.suppress(psutil.Error):
                memory += proc.memory_info().rss
        app_pid = tree[1].pid if len(tree) > 1 else None
        total = psutil.virtual_memory().total
        return Stats(round(cpu, 1), int(memory), round(100 * memory / total, 2), len(tree), app_pid)

    def _tree(self, pid: int, known: dict[int, psutil.Process]) -> list[psutil.Process]:
        """The replica's processes. Listing children scans every process of the host (psutil reads each one's
        /proc entry), so the last listing is reused for TREE_REFRESH_S while all its processes still run: with
        10 replicas sampled every second this is most of what monitoring costs."""
        listed_at = self._listed_at.get(pid)
        fresh = listed_at is not None and time.monotonic() - listed_at < TREE_REFRESH_S
        if known and fresh and all(proc.is_running() for proc in known.values()):
            return list(known.values())
        try:
            leader = psutil.Process(pid)
            tree = [leader, *leader.children(recursive=True)]
        except psutil.Error as exc:
            raise RuntimeFailure(f"process {pid} is gone", retryable=False) from exc
        self._listed_at[pid] = time.monotonic()
        return tree

    async def forget(self, replica_id: str) -> None:
        self._ports.pop(replica_id, None)
        self._killed.pop(replica_id, None)
        await asyncio.to_thread(shutil.rmtree, self._dir(replica_id), True)


def _cpu(proc: psutil.Process) -> float:
    try:
        return float(proc.cpu_percent(interval=None))
    except psutil.Error:
        return 0.0


def _await_exit(procs: list[psutil.Process], timeout_s: float) -> None:
    """Until every one of `procs` has exited (a zombie has: only its parent's wait is left), or `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while any(_running(proc) for proc in procs) and time.monotonic() < deadline:
        time.sleep(0.01)


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
