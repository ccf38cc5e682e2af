"""What of portero's own environment a process replica gets: the documented few, never a secret."""

from __future__ import annotations

import pwd

import pytest

from portero.runtimes.accounts import Account, resolve
from portero.runtimes.base import RuntimeFailure
from portero.runtimes.environment import replica_environment
from portero.spec.models import ServiceSpec

HOST = {
    "PATH": "/venv/bin:/usr/bin:/bin",
    "LANG": "es_CL.UTF-8",
    "LC_TIME": "C",
    "TZ": "America/Santiago",
    "TMPDIR": "/var/tmp",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/bash",
    "PORTERO_TOKEN": "prt_secret",
    "AWS_SECRET_ACCESS_KEY": "fake-secret",
    "REDIS_URL": "redis://:password@127.0.0.1/0",
    "PYTHONPATH": "/somewhere",
}
OWN = {"PORT": "5001", "PORTERO_REPLICA_ID": "web-1-abcd", "PORTERO_SERVICE": "web", "PORTERO_REVISION": "1"}


def test_only_documented_host_variables_pass():
    env = replica_environment(HOST, {}, OWN, None)
    secrets = {"PORTERO_TOKEN", "AWS_SECRET_ACCESS_KEY", "REDIS_URL", "PYTHONPATH"}
    assert env == {k: v for k, v in HOST.items() if k not in secrets} | OWN
    assert "LC_TIME" in env  # the locale's categories, by prefix


def test_the_spec_wins_over_the_host_and_portero_over_both():
    given = {"PATH": "/app/bin", "REDIS_URL": "redis://sessions/1", "PORT": "1"}
    env = replica_environment(HOST, given, OWN, None)
    assert env["PATH"] == "/app/bin"
    assert env["REDIS_URL"] == "redis://sessions/1"  # given by the spec (or `env_from_host`), not inherited
    assert env["PORT"] == "5001"


def test_another_user_gets_its_own_home_and_names():
    nobody = Account(65534, 65534, (65534,), "nobody", "/nonexistent", "/usr/sbin/nologin")
    env = replica_environment(HOST, {}, OWN, nobody)
    assert (env["HOME"], env["USER"], env["LOGNAME"], env["SHELL"]) == (
        "/nonexistent",
        "nobody",
        "nobody",
        "/usr/sbin/nologin",
    )
    bare = Account(4242, 4242, (4242,), None, "/", "/bin/sh")  # a uid without a passwd entry
    env = replica_environment(HOST, {}, OWN, bare)
    assert "USER" not in env
    assert "LOGNAME" not in env
    assert env["HOME"] == "/"


def test_a_host_without_path_still_gives_one():
    assert replica_environment({}, {}, OWN, None)["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_users_and_groups_are_looked_up_and_an_unknown_one_refuses_the_spec():
    nobody = resolve(ServiceSpec(command=("app",), user="nobody"))
    assert nobody is not None
    assert (nobody.uid, nobody.name, nobody.home) == (pwd.getpwnam("nobody").pw_uid, "nobody", "/nonexistent")
    assert nobody.gid == pwd.getpwnam("nobody").pw_gid
    assert resolve(ServiceSpec(command=("app",))) is None
    for fields, problem in [
        ({"user": "no-such-user-x"}, "`user`: no user 'no-such-user-x' on this host"),
        ({"user": "nobody", "group": "no-such-group"}, "`group`: no group 'no-such-group' on this host"),
        ({"user": "4242424"}, "`user`: uid 4242424 has no entry in /etc/passwd, so no group: set `group` too"),
    ]:
        with pytest.raises(RuntimeFailure) as caught:
            resolve(ServiceSpec(command=("app",), **fields))
        assert str(caught.value).startswith(problem)
        assert caught.value.retryable is False
    bare = resolve(ServiceSpec(command=("app",), user="4242424", group="4242424"))
    assert bare == Account(4242424, 4242424, (4242424,), None, "/", "/bin/sh")
