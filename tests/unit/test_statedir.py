"""The state directory is made owner-only at start, whatever it was; what cannot be fixed refuses the start."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from portero import statedir
from tests.conftest import REQUIRE_ALL

SYSTEM_PYTHON = "/usr/bin/python3"
SRC = Path(__file__).parents[2] / "src"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def _keep_umask():
    """prepare() sets the process's umask: the test runner's own is restored afterwards."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


def test_a_loose_state_directory_and_everything_in_it_is_made_owner_only(tmp_path):
    state = tmp_path / "s"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "state.db").write_text("")
    (state / "state.db").chmod(0o644)
    logs = state / "replicas" / "web-1-abcd"
    logs.mkdir(parents=True)
    (state / "replicas").chmod(0o775)
    (logs / "replica.log").write_text("a line\n")
    (logs / "replica.log").chmod(0o666)
    (state / "run.sh").write_text("")
    (state / "run.sh").chmod(0o755)
    outside = tmp_path / "outside"
    outside.write_text("")
    outside.chmod(0o644)
    (state / "link").symlink_to(outside)

    fixed = statedir.prepare(state)

    assert mode(state) == 0o700
    assert mode(state / "state.db") == 0o600
    assert mode(state / "replicas") == 0o700
    assert mode(logs / "replica.log") == 0o600
    assert mode(state / "run.sh") == 0o700  # the owner keeps what it had
    assert mode(outside) == 0o644  # a link is not followed out of the directory
    assert f"{state} was 0755" in fixed
    assert f"{state / 'state.db'} was 0644" in fixed
    assert len(fixed) == 6  # the directory, state.db, replicas/, its folder, the log, run.sh
    assert statedir.prepare(state) == []  # nothing left to fix


def test_files_made_afterwards_are_private_and_replicas_get_the_umask_portero_had(tmp_path):
    """In a process of its own: the umask is the process's, and app_umask() remembers the first one."""
    code = (
        "import os, sys; from pathlib import Path; from portero import statedir\n"
        "state = Path(sys.argv[1]); statedir.prepare(state); statedir.prepare(state)\n"
        "(state / 'later.log').write_text(''); os.mkdir(state / 'later')\n"
        "print(oct(statedir.app_umask()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "new")], umask=0o027, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0o27"  # what replicas run with: portero's own umask from before
    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "new" / "later.log") == 0o600
    assert mode(tmp_path / "new" / "later") == 0o700


def test_a_state_directory_of_another_user_refuses_the_start_with_the_command(request):
    """portero run by `nobody` on root's directory: its owner could act as portero; the start is refused."""
    if os.geteuid() != 0:
        message = "needs root to run a second user (CI runs as root)"
        pytest.fail(message) if REQUIRE_ALL else pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="portero-statedir-"))  # pytest's tmp_path is under a 0700 directory
    request.addfinalizer(lambda: shutil.rmtree(base))
    base.chmod(0o755)
    state = base / "s"
    state.mkdir()
    state.chmod(0o755)
    code = "import sys; from pathlib import Path; from portero import statedir; statedir.prepare(Path(sys.argv[1]))"
    python = SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else sys.executable  # nobody may not reach the venv's
    # A copy the user `nobody` can read: the checkout may sit in a 0700 directory only root enters (`mktemp -d`).
    shutil.copytree(SRC / "portero", base / "src" / "portero", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = {"PYTHONPATH": str(base / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [python, "-c", code, str(state)], user="nobody", env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert f"{state} belongs to uid 0, not to portero's (uid 65534): its owner could add a token" in done.stderr
    assert f"Run `chown -R nobody {state}`, or start portero as that user" in done.stderr


def test_a_file_of_another_user_inside_refuses_the_start(tmp_path):
    """As root: a file someone else owns in the state directory (they could have written tokens.json)."""
    if os.geteuid() != 0:
        message = "needs root to give a file to another user (CI runs as root)"
        pytest.fail(message) if REQUIRE_ALL else pytest.skip(message)
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    (state / "tokens.json").write_text("")
    os.chown(state / "tokens.json", 65534, 65534)
    with pytest.raises(statedir.StateDirError) as caught:
        statedir.prepare(state)
    assert str(caught.value).startswith(f"{state / 'tokens.json'} belongs to uid 65534, not to portero's (uid 0)")
    assert f"Run `chown -R root {state}`" in str(caught.value)
