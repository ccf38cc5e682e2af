"""Tests for the demo workload in examples/portal (Flask test client, plus one real gunicorn run)."""

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask
from flask.testing import FlaskClient

from portero.runtimes.ports import free_port

PORTAL_DIR = Path(__file__).resolve().parents[2] / "examples" / "portal"
PORTAL_ENV = (
    "PORTAL_NAME",
    "APP_VERSION",
    "PORTERO_REPLICA_ID",
    "PORTAL_DATA_DIR",
    "PORTAL_FAIL_HEALTH",
    "PORTAL_ERROR_RATE",
)


def _load_portal() -> ModuleType:
    # examples/portal is not a package and "main" is too generic a name for sys.path; its own modules
    # (external.py, sessions.py) are imported as gunicorn does, from its directory.
    if str(PORTAL_DIR) not in sys.path:
        sys.path.append(str(PORTAL_DIR))
    spec = importlib.util.spec_from_file_location("portal_main", PORTAL_DIR / "main.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


portal = _load_portal()

MakeClient = Callable[..., FlaskClient]


@pytest.fixture
def make_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeClient:
    """Builds a fresh app from the environment, with PORTAL_DATA_DIR in tmp_path and extra env vars."""
    for name in PORTAL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORTAL_DATA_DIR", str(tmp_path / "data"))

    def make(**env: str) -> FlaskClient:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app: Flask = portal.create_app({"TESTING": True})
        return app.test_client()

    return make


@pytest.fixture
def client(make_client: MakeClient) -> FlaskClient:
    return make_client()


def _announcement(**overrides: object) -> dict[str, object]:
    return {"title": "Asamblea de vecinos", "body": "El sábado a las 10 en el club house.", **overrides}


def _visitor(**overrides: object) -> dict[str, object]:
    return {"visitor_name": "Ana Pérez", "unit": "Lote 42", "valid_on": "2030-05-17", **overrides}


# --- identity headers ------------------------------------------------------------------------


def test_default_identity_headers(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.headers["X-App-Version"] == "v1"
    assert response.headers["X-Replica"] == f"{socket.gethostname()}-{os.getpid()}"


@pytest.mark.parametrize("path", ["/", "/health", "/visitors/NOPE", "/no-such-page", "/work?ms=x"])
def test_identity_headers_on_every_response(make_client: MakeClient, path: str) -> None:
    client = make_client(APP_VERSION="v7", PORTERO_REPLICA_ID="web-3")
    response = client.get(path)
    assert response.headers["X-App-Version"] == "v7"
    assert response.headers["X-Replica"] == "web-3"


# --- home and announcements ------------------------------------------------------------------


def test_home_renders(make_client: MakeClient) -> None:
    client = make_client(PORTAL_NAME="Barrio Las Acacias", APP_VERSION="v2", PORTERO_REPLICA_ID="r1")
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "Barrio Las Acacias" in html
    assert "Bienvenidos al portal del barrio" in html  # seeded announcement
    assert 'href="/visitors"' in html
    assert "Versión v2" in html
    assert "Réplica r1" in html


def test_home_default_name_and_escaping(client: FlaskClient) -> None:
    client.post("/announcements", json=_announcement(title="<script>alert(1)</script>"))
    html = client.get("/").get_data(as_text=True)
    assert "Barrio Los Aromos" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html


def test_announcements_seeded_once(make_client: MakeClient) -> None:
    first = make_client().get("/announcements?format=json").get_json()
    assert [item["title"] for item in first] == [
        "Bienvenidos al portal del barrio",
        "Corte de agua programado",
    ]
    # A second process/replica on the same data directory does not seed again.
    second = make_client().get("/announcements?format=json").get_json()
    assert second == first


def test_announcements_content_negotiation(client: FlaskClient) -> None:
    html = client.get("/announcements")
    assert html.mimetype == "text/html"
    assert "Corte de agua programado" in html.get_data(as_text=True)
    assert "Accept" in html.headers["Vary"]

    by_header = client.get("/announcements", headers={"Accept": "application/json"})
    by_query = client.get("/announcements?format=json")
    for response in (by_header, by_query):
        assert response.mimetype == "application/json"
        assert len(response.get_json()) == 2


def test_create_announcement(client: FlaskClient) -> None:
    response = client.post("/announcements", json=_announcement(title="  Asamblea de vecinos  "))
    assert response.status_code == 201
    created = response.get_json()
    assert created["title"] == "Asamblea de vecinos"
    assert created["body"] == "El sábado a las 10 en el club house."
    assert isinstance(created["id"], int)
    assert created["created_at"]

    listed = client.get("/announcements?format=json").get_json()
    assert listed[0] == created
    assert len(listed) == 3


def test_announcement_length_limits_are_inclusive(client: FlaskClient) -> None:
    response = client.post("/announcements", json=_announcement(title="t" * 120, body="b" * 2000))
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"body": "texto"}, "title"),
        (_announcement(title=""), "title"),
        (_announcement(title="   "), "title"),
        (_announcement(title="t" * 121), "title"),
        (_announcement(title=42), "title"),
        ({"title": "Aviso"}, "body"),
        (_announcement(body=""), "body"),
        (_announcement(body="b" * 2001), "body"),
    ],
)
def test_create_announcement_validation(client: FlaskClient, payload: dict[str, object], field: str) -> None:
    response = client.post("/announcements", json=payload)
    assert response.status_code == 400
    error = response.get_json()
    assert error["field"] == field
    assert field in error["error"]
    assert len(client.get("/announcements?format=json").get_json()) == 2


@pytest.mark.parametrize("path", ["/announcements", "/visitors"])
def test_post_requires_json_object(client: FlaskClient, path: str) -> None:
    for response in (
        client.post(path, data="no es json", content_type="application/json"),
        client.post(path, json=["a", "b"]),
        client.post(path),
    ):
        assert response.status_code == 400
        assert response.get_json()["error"]


# --- visitor passes --------------------------------------------------------------------------


def test_create_and_get_visitor_pass(client: FlaskClient) -> None:
    response = client.post("/visitors", json=_visitor())
    assert response.status_code == 201
    created = response.get_json()
    assert re.fullmatch(r"[A-Z]{6}", created["code"])
    assert created["visitor_name"] == "Ana Pérez"
    assert created["unit"] == "Lote 42"
    assert created["valid_on"] == "2030-05-17"

    fetched = client.get(f"/visitors/{created['code']}")
    assert fetched.status_code == 200
    assert fetched.get_json() == created
    assert client.get(f"/visitors/{created['code'].lower()}").get_json() == created


def test_list_visitor_passes(client: FlaskClient) -> None:
    assert client.get("/visitors").get_json() == []
    codes = [
        client.post("/visitors", json=_visitor(visitor_name=name, unit=unit)).get_json()["code"]
        for name, unit in [("Ana", "Lote 42"), ("Beto", "Lote 7"), ("Carla", "Lote 42")]
    ]
    listed = client.get("/visitors").get_json()
    assert [item["code"] for item in listed] == codes[::-1]

    lote_42 = client.get("/visitors?unit=Lote 42").get_json()
    assert [item["visitor_name"] for item in lote_42] == ["Carla", "Ana"]
    assert client.get("/visitors?unit=Lote 99").get_json() == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"unit": "Lote 1", "valid_on": "2030-01-01"}, "visitor_name"),
        (_visitor(visitor_name=""), "visitor_name"),
        (_visitor(visitor_name="n" * 121), "visitor_name"),
        (_visitor(visitor_name=["Ana"]), "visitor_name"),
        ({"visitor_name": "Ana", "valid_on": "2030-01-01"}, "unit"),
        (_visitor(unit="  "), "unit"),
        (_visitor(unit="u" * 41), "unit"),
        ({"visitor_name": "Ana", "unit": "Lote 1"}, "valid_on"),
        (_visitor(valid_on="17/05/2030"), "valid_on"),
        (_visitor(valid_on="20300517"), "valid_on"),
        (_visitor(valid_on="2030-02-30"), "valid_on"),
        (_visitor(valid_on=20300517), "valid_on"),
    ],
)
def test_create_visitor_pass_validation(client: FlaskClient, payload: dict[str, object], field: str) -> None:
    response = client.post("/visitors", json=payload)
    assert response.status_code == 400
    error = response.get_json()
    assert error["field"] == field
    assert field in error["error"]
    assert client.get("/visitors").get_json() == []


def test_unknown_visitor_pass_is_json_404(client: FlaskClient) -> None:
    response = client.get("/visitors/ZZZZZZ")
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]


def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "application/json"


# --- health and failure modes ----------------------------------------------------------------


def test_health_ok(make_client: MakeClient) -> None:
    response = make_client(APP_VERSION="v3", PORTERO_REPLICA_ID="r9").get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": "v3", "replica": "r9"}


@pytest.mark.parametrize("value", ["1", "true", "TRUE"])
def test_health_failing(make_client: MakeClient, value: str) -> None:
    client = make_client(PORTAL_FAIL_HEALTH=value)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.get_json() == {"status": "failing"}
    assert client.get("/").status_code == 200  # only the health check fails


def test_error_rate_half(make_client: MakeClient) -> None:
    client = make_client(PORTAL_ERROR_RATE="0.5")
    responses = []
    for _ in range(10):
        responses.append(client.get("/announcements?format=json"))
        assert client.get("/health").status_code == 200  # never failed, never counted
    assert [response.status_code for response in responses] == [200, 500] * 5
    assert all(response.headers["X-App-Version"] == "v1" for response in responses)


@pytest.mark.parametrize(("rate", "failures"), [("0", 0), ("0.25", 5), ("0.1", 2), ("1", 20)])
def test_error_rate_is_exact(make_client: MakeClient, rate: str, failures: int) -> None:
    client = make_client(PORTAL_ERROR_RATE=rate)
    statuses = [client.get("/visitors").status_code for _ in range(20)]
    assert statuses.count(500) == failures
    assert statuses.count(200) == 20 - failures


@pytest.mark.parametrize("rate", ["-0.1", "1.5", "mucho", "nan"])
def test_invalid_error_rate_is_rejected(make_client: MakeClient, rate: str) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        make_client(PORTAL_ERROR_RATE=rate)


# --- /work and /wait -------------------------------------------------------------------------


def test_work_burns_cpu(client: FlaskClient) -> None:
    started = time.process_time()
    response = client.get("/work?ms=50")
    assert response.status_code == 200
    assert response.get_json() == {"burned_ms": 50}
    assert time.process_time() - started >= 0.05


@pytest.mark.parametrize("ms", ["0", "10000"])
def test_work_bounds_accepted(client: FlaskClient, ms: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(1_000_000))  # a fake CPU clock advancing 1 s per call: no real burn needed
    monkeypatch.setattr(portal.time, "process_time", lambda: float(next(ticks)))
    response = client.get(f"/work?ms={ms}")
    assert response.status_code == 200
    assert response.get_json() == {"burned_ms": int(ms)}


def test_wait_sleeps_without_burning_cpu(client: FlaskClient) -> None:
    wall, cpu = time.monotonic(), time.process_time()
    response = client.get("/wait?ms=200")
    assert response.status_code == 200
    assert response.get_json() == {"waited_ms": 200}
    assert time.monotonic() - wall >= 0.2
    assert time.process_time() - cpu < 0.1


def test_wait_upper_bound_accepted(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(portal.time, "sleep", slept.append)
    assert client.get("/wait?ms=60000").get_json() == {"waited_ms": 60000}
    assert slept == [60.0]


@pytest.mark.parametrize(
    "path",
    [
        "/work",
        "/work?ms=",
        "/work?ms=-1",
        "/work?ms=10001",
        "/work?ms=1.5",
        "/work?ms=abc",
        "/wait?ms=-5",
        "/wait?ms=60001",
        "/wait?ms=" + "9" * 5000,
    ],
)
def test_work_and_wait_reject_bad_ms(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400
    assert response.get_json()["field"] == "ms"


# --- real server -----------------------------------------------------------------------------


@pytest.mark.integration
def test_gunicorn_serves_the_app(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {name: value for name, value in os.environ.items() if name not in PORTAL_ENV}
    # XDG_RUNTIME_DIR: gunicorn's control socket goes there instead of ~/.gunicorn.
    env.update(APP_VERSION="v-gunicorn", PORTAL_DATA_DIR=str(tmp_path / "data"), XDG_RUNTIME_DIR=str(tmp_path))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, no proxy
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--chdir",
                str(PORTAL_DIR),
                "--bind",
                f"127.0.0.1:{port}",
                "main:app",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"gunicorn exited early:\n{log_path.read_text()}"
            try:
                with opener.open(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"gunicorn never got healthy:\n{log_path.read_text()}"
            time.sleep(0.1)

        with opener.open(f"{base}/", timeout=5) as response:
            assert response.status == 200
            assert response.headers["X-App-Version"] == "v-gunicorn"
            assert "Barrio Los Aromos" in response.read().decode()
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_master_removes_the_metrics_directories_of_masters_killed_before_it(tmp_path: Path) -> None:
    """A master killed with SIGKILL never removes its multiprocess directory; the next one does (755 were left in
    /tmp by the kill tests), and leaves those of masters that still run."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f"portal-metrics-{dead.stdout.strip()}-abc"
    alive = tmp_path / f"portal-metrics-{os.getpid()}-def"
    for path in (gone, alive):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"x")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {"TMPDIR": str(tmp_path)}
    script = (
        "import os, runpy; runpy.run_path('gunicorn.conf.py'); "
        "print(os.getpid(), os.environ['PROMETHEUS_MULTIPROC_DIR'])"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=PORTAL_DIR, env=env, capture_output=True, text=True)
    pid, made = out.stdout.split()
    assert not gone.exists()
    assert alive.exists()
    assert Path(made).parent == tmp_path
    assert Path(made).name.startswith(f"portal-metrics-{pid}-")
