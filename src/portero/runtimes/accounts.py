"""Who a process replica runs as (`services.NAME.user` and `.group`), looked up in this host's accounts.

A name or a number, as `docker run --user` takes it. The process runtime gives the shim the numbers, and the
shim drops to them just before it runs the app (setgroups, setgid, setuid: `subprocess.Popen(user=...)`), so
the shim itself stays portero's user and keeps writing the replica's log into the private state directory.
Looked up when a spec is applied, so that an unknown user refuses the spec instead of failing every start.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from portero.runtimes.base import RuntimeFailure
from portero.spec.models import ServiceSpec

__all__ = ["Account", "container_user", "resolve", "runs_as"]


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups: the user's own, never portero's
    name: str | None  # None for a uid without a passwd entry
    home: str
    shell: str


def resolve(spec: ServiceSpec) -> Account | None:
    """The account of `spec.user`/`group`; None when neither is set (the replica runs as portero does).
    A final RuntimeFailure names the field when the host has no such user or group, or when portero, not
    being root, cannot switch to it (the caller says which service)."""
    if spec.user is None and spec.group is None:
        return None
    user = spec.user if spec.user is not None else str(os.geteuid())  # `group` alone: portero's user
    entry = _user(user)
    uid = entry.pw_uid if entry is not None else int(user)
    if spec.group is not None:
        gid = _group(spec.group)
    elif entry is not None:
        gid = entry.pw_gid
    else:
        raise RuntimeFailure(
            f"`user`: uid {uid} has no entry in /etc/passwd, so no group: set `group` too", retryable=False
        )
    if os.geteuid() != 0 and (uid, gid) != (os.geteuid(), os.getegid()):
        raise RuntimeFailure(
            f"`user`: portero runs as uid {os.geteuid()}, not root, so it cannot start replicas as uid {uid} gid "
            f"{gid}; run portero as root or remove the field",
            retryable=False,
        )
    groups = tuple(os.getgrouplist(entry.pw_name, gid)) if entry is not None else (gid,)
    name = entry.pw_name if entry is not None else None
    return Account(uid, gid, groups, name, entry.pw_dir if entry else "/", entry.pw_shell if entry else "/bin/sh")


def _user(user: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():
            return None  # a bare uid, as containers allow; its group must be given
        raise RuntimeFailure(f"`user`: no user {user!r} on this host", retryable=False) from None


def _group(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise RuntimeFailure(f"`group`: no group {group!r} on this host", retryable=False) from None


def runs_as(spec: ServiceSpec, runtime: str) -> str | None:
    """Who a service's replicas run as, for `portero status`: the spec's user, else portero's own (process
    runtime); None when a container image decides."""
    if spec.user is not None:
        return container_user(spec)
    if runtime != "process":
        return None
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def container_user(spec: ServiceSpec) -> str | None:
    """`docker run --user`'s value: `user` or `user:group`, looked up in the image (not on this host)."""
    if spec.user is None:
        return None
    return spec.user if spec.group is None else f"{spec.user}:{spec.group}"
