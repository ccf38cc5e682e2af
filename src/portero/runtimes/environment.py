"""The environment of a process replica: what the spec gives it, what portero documents, a few of the host's.

Nothing else of portero's own environment reaches a replica: portero may hold an admin token
(`PORTERO_TOKEN`), a cloud provider's keys or a database password meant for itself, and an app prints its
environment in a crash report or a debug page sooner or later. systemd starts services the same way, from a
clean environment plus `PassEnvironment=`; the spec's `env_from_host` is that list.
"""

from __future__ import annotations

from collections.abc import Mapping

from portero.runtimes.accounts import Account

# Taken from the host as they are: how to find programs, the language, the time zone and where temporary files go.
HOST_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "HOME", "USER", "LOGNAME", "SHELL")
HOST_PREFIXES = ("LC_",)  # the locale's categories
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def replica_environment(
    host: Mapping[str, str], given: Mapping[str, str], portero: Mapping[str, str], account: Account | None
) -> dict[str, str]:
    """`given` is the spec's (with `env_from_host` already resolved by the supervisor), `portero` what portero
    sets (PORT, PORTERO_REPLICA_ID...), which wins over both. A replica run as another user gets that user's
    HOME, USER, LOGNAME and SHELL rather than portero's, as `su -` does."""
    env = {k: v for k, v in host.items() if k in HOST_VARIABLES or k.startswith(HOST_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    if account is not None:
        env.update(HOME=account.home, SHELL=account.shell)
        for key in ("USER", "LOGNAME"):
            env.pop(key, None)
            if account.name is not None:
                env[key] = account.name
    return env | dict(given) | dict(portero)
