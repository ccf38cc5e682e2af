"""The state directory is owner-only, whatever it was before, and whatever portero writes into it later.

It holds the admin token, the token hashes, the spec with its env values (`state.db`) and the replicas' logs.
At every start, the directory and everything in it lose their group and other bits (`chmod -R go=`), each
change named in a warning. What cannot be changed (a read-only file system) and what belongs to another user
(who could add a token of its own) refuse the start with the command that fixes it. Then portero's umask
becomes 077, so that SQLite's journal, a rotated log and every file made later are private from their first
byte, as systemd's `UMask=0077` would make them. Replicas get back the umask portero was started with: their
files are the app's business.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

__all__ = ["StateDirError", "app_umask", "prepare"]

PRIVATE_UMASK = 0o077
_started_umask: int | None = None  # portero's umask before prepare(), for the replicas


class StateDirError(Exception):
    """The state directory cannot be made private; the message says what to run."""


def prepare(state_dir: Path) -> list[str]:
    """Make the state directory (0700) or make it private again; returns what was loosened before, one line
    each, for a warning. Also sets the private umask for the rest of portero's life."""
    global _started_umask
    previous = os.umask(PRIVATE_UMASK)
    if _started_umask is None:
        _started_umask = previous
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateDirError(f"--state-dir {state_dir}: {exc.strerror}") from exc
    fixed = []
    for path in [state_dir, *_inside(state_dir)]:
        mode = 0
        try:
            found = path.lstat()
            mode = stat.S_IMODE(found.st_mode)
            if found.st_uid != os.geteuid() and not stat.S_ISLNK(found.st_mode):
                raise StateDirError(
                    f"{path} belongs to uid {found.st_uid}, not to portero's (uid {os.geteuid()}): its owner could "
                    f"add a token to tokens.json and act as portero. Run `chown -R {_me()} {state_dir}`, or start "
                    "portero as that user"
                )
            if stat.S_ISLNK(found.st_mode) or not mode & 0o077:
                continue  # a link's own mode means nothing, and its target is not portero's to change
            path.chmod(mode & ~0o077)
        except FileNotFoundError:
            continue  # gone meanwhile (a log rotated by a running shim)
        except OSError as exc:
            raise StateDirError(
                f"{path} is {mode:04o} and cannot be made private ({exc.strerror}): the state directory holds the "
                f"admin token and the spec's secrets. Run `chmod -R go= {state_dir}` as its owner (or root), "
                "then start portero again"
            ) from exc
        fixed.append(f"{path} was {mode:04o}")
    return fixed


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _inside(state_dir: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(state_dir):  # links to directories are not followed
        found += [Path(folder, name) for name in dirs + files]
    return found


def app_umask() -> int:
    """The umask portero was started with (before prepare()), which replicas run with."""
    if _started_umask is not None:
        return _started_umask
    current = os.umask(PRIVATE_UMASK)
    os.umask(current)
    return current
