"""Portal de barrio privado: the demo workload supervised by portero.

A small Flask app (announcements and visitor passes) served by gunicorn as ``main:app``.
Data lives in SQLite (WAL mode) so every worker and replica on the host shares it.

Environment variables, read when the app is created:

- ``PORTAL_NAME``: community name shown on the home page (default "Barrio Los Aromos").
- ``APP_VERSION``: sent in ``X-App-Version`` on every response (default "v1").
- ``PORTERO_REPLICA_ID``: sent in ``X-Replica`` (default "<hostname>-<pid>").
- ``PORTAL_DATA_DIR``: directory of the SQLite file (default "<tmpdir>/portal-data").
- ``PORTAL_FAIL_HEALTH``: "1"/"true" makes ``/health`` answer 503 (a deploy that never gets healthy).
- ``REDIS_URL``: keep login sessions in Redis, shared by every replica (``sessions.py``).
- ``PORTAL_ERROR_RATE``: fraction 0..1 of requests (all but ``/health``) answering 500,
  deterministic per process: 0.5 fails every 2nd request, 0.25 every 4th, 1 all of them.
"""

import os
import re
import secrets
import socket
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import external
import sessions  # logins, kept in Redis when REDIS_URL is set (sessions.py)
from flask import Blueprint, Flask, Response, current_app, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

DB_FILENAME = "portal.db"
TITLE_MAX = 120
BODY_MAX = 2000
NAME_MAX = 120
UNIT_MAX = 40
LIST_LIMIT = 100
HOME_ANNOUNCEMENTS = 5
WORK_MAX_MS = 10_000
WAIT_MAX_MS = 60_000
CODE_LENGTH = 6
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # uppercase without I and O, easy to read over the phone
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MILLIS = re.compile(r"[0-9]{1,6}")
TRUE_VALUES = {"1", "true", "yes", "on"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS announcements (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS visitor_passes (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    visitor_name TEXT NOT NULL,
    unit TEXT NOT NULL,
    valid_on TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS visitor_passes_unit ON visitor_passes (unit COLLATE NOCASE);
"""

SEED_ANNOUNCEMENTS = [  # oldest first
    (
        "Corte de agua programado",
        "El jueves de 9 a 13 h se hará el mantenimiento de la cisterna. Les pedimos reservar agua.",
    ),
    (
        "Bienvenidos al portal del barrio",
        "Desde acá pueden leer los avisos de la administración y registrar pases para sus visitas.",
    ),
]

bp = Blueprint("portal", __name__)


# --- configuration -----------------------------------------------------------------------------


def settings_from_env() -> dict[str, Any]:
    """The app settings, taken from the environment (see the module docstring)."""
    return {
        "PORTAL_NAME": os.environ.get("PORTAL_NAME") or "Barrio Los Aromos",
        "APP_VERSION": os.environ.get("APP_VERSION") or "v1",
        "REPLICA_ID": os.environ.get("PORTERO_REPLICA_ID") or None,
        "DATA_DIR": os.environ.get("PORTAL_DATA_DIR") or str(Path(tempfile.gettempdir()) / "portal-data"),
        "FAIL_HEALTH": os.environ.get("PORTAL_FAIL_HEALTH", "").strip().lower() in TRUE_VALUES,
        "ERROR_RATE": parse_error_rate(os.environ.get("PORTAL_ERROR_RATE") or "0"),
    }


def parse_error_rate(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"PORTAL_ERROR_RATE must be a number between 0 and 1, got {raw!r}") from None


def replica_id() -> str:
    configured: str | None = current_app.config["REPLICA_ID"]
    return configured or f"{socket.gethostname()}-{os.getpid()}"


class FailureInjector:
    """Fails a fixed fraction of calls, deterministically: call n fails when floor(n * rate) increases."""

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:  # also rejects NaN
            raise ValueError(f"the error rate must be between 0 and 1, got {rate!r}")
        fraction = Fraction(rate).limit_denominator(1000)
        self._numerator = fraction.numerator
        self._denominator = fraction.denominator
        self._calls = 0
        self._lock = threading.Lock()

    def should_fail(self) -> bool:
        if self._numerator == 0:
            return False
        with self._lock:
            self._calls += 1
            n = self._calls
        return n * self._numerator // self._denominator > (n - 1) * self._numerator // self._denominator


# --- storage -----------------------------------------------------------------------------------


class Database:
    """Opens connections to the shared SQLite file; creates and seeds the schema on first use."""

    def __init__(self, data_dir: str) -> None:
        self.path = Path(data_dir) / DB_FILENAME
        self._ready = False
        self._lock = threading.Lock()

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: single statements commit on their own, transactions are explicit.
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            if not self._ready:
                self._initialize(conn)
                self._ready = True
        return conn

    @staticmethod
    def _initialize(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        with conn:  # BEGIN IMMEDIATE takes the write lock, so concurrent workers seed only once
            conn.execute("BEGIN IMMEDIATE")
            (count,) = conn.execute("SELECT COUNT(*) FROM announcements").fetchone()
            if count == 0:
                now = utc_now()
                conn.executemany(
                    "INSERT INTO announcements (title, body, created_at) VALUES (?, ?, ?)",
                    [(title, body, now) for title, body in SEED_ANNOUNCEMENTS],
                )


def get_db() -> sqlite3.Connection:
    """The connection of the current request, opened on first use."""
    if "db" not in g:
        database: Database = current_app.extensions["portal_db"]
        g.db = database.connect()
    conn: sqlite3.Connection = g.db
    return conn


def close_db(_exc: BaseException | None) -> None:
    conn: sqlite3.Connection | None = g.pop("db", None)
    if conn is not None:
        conn.close()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- validation and errors ---------------------------------------------------------------------


class ValidationError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def validation_error(error: ValidationError) -> ResponseReturnValue:
    payload: dict[str, str] = {"error": error.message}
    if error.field is not None:
        payload["field"] = error.field
    return jsonify(payload), 400


def http_error(error: HTTPException) -> ResponseReturnValue:
    return jsonify(error=error.description), error.code or 500


def json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ValidationError("el cuerpo debe ser un objeto JSON")
    return data


def required_text(data: dict[str, Any], field: str, max_length: int) -> str:
    value = data.get(field)
    if value is None:
        raise ValidationError(f"'{field}' es obligatorio", field)
    if not isinstance(value, str):
        raise ValidationError(f"'{field}' debe ser un texto", field)
    value = value.strip()
    if not value:
        raise ValidationError(f"'{field}' no puede estar vacío", field)
    if len(value) > max_length:
        raise ValidationError(f"'{field}' admite como máximo {max_length} caracteres", field)
    return value


def required_date(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        raise ValidationError(f"'{field}' debe ser una fecha con formato YYYY-MM-DD", field)
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"'{field}' no es una fecha válida", field) from None
    return value


def millis_arg(maximum: int) -> int:
    raw = request.args.get("ms", "")
    if not MILLIS.fullmatch(raw) or int(raw) > maximum:
        raise ValidationError(f"'ms' debe ser un entero entre 0 y {maximum}", "ms")
    return int(raw)


def wants_json() -> bool:
    if request.args.get("format") == "json":
        return True
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


# --- routes ------------------------------------------------------------------------------------


def list_announcements(limit: int) -> list[dict[str, Any]]:
    rows = get_db().execute("SELECT id, title, body, created_at FROM announcements ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(row) for row in rows]


@bp.get("/")
def home() -> ResponseReturnValue:
    return render_template("home.html", announcements=list_announcements(HOME_ANNOUNCEMENTS))


@bp.get("/announcements")
def announcements() -> ResponseReturnValue:
    items = list_announcements(LIST_LIMIT)
    vary = {"Vary": "Accept"}
    if wants_json():
        return jsonify(items), vary
    return render_template("announcements.html", announcements=items), vary


@bp.post("/announcements")
def create_announcement() -> ResponseReturnValue:
    data = json_body()
    title = required_text(data, "title", TITLE_MAX)
    body = required_text(data, "body", BODY_MAX)
    created_at = utc_now()
    cursor = get_db().execute(
        "INSERT INTO announcements (title, body, created_at) VALUES (?, ?, ?)", (title, body, created_at)
    )
    item = {"id": cursor.lastrowid, "title": title, "body": body, "created_at": created_at}
    return jsonify(item), 201


@bp.get("/visitors")
def visitors() -> ResponseReturnValue:
    query = "SELECT code, visitor_name, unit, valid_on, created_at FROM visitor_passes"
    params: list[Any] = []
    unit = request.args.get("unit", "").strip()
    if unit:
        query += " WHERE unit = ? COLLATE NOCASE"
        params.append(unit)
    query += " ORDER BY id DESC LIMIT ?"
    params.append(LIST_LIMIT)
    return jsonify([dict(row) for row in get_db().execute(query, params)])


@bp.post("/visitors")
def create_visitor_pass() -> ResponseReturnValue:
    data = json_body()
    item = {
        "visitor_name": required_text(data, "visitor_name", NAME_MAX),
        "unit": required_text(data, "unit", UNIT_MAX),
        "valid_on": required_date(data, "valid_on"),
        "created_at": utc_now(),
    }
    for _attempt in range(5):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        try:
            get_db().execute(
                "INSERT INTO visitor_passes (code, visitor_name, unit, valid_on, created_at)"
                " VALUES (:code, :visitor_name, :unit, :valid_on, :created_at)",
                {"code": code, **item},
            )
        except sqlite3.IntegrityError:  # code already taken: draw another one
            continue
        return jsonify({"code": code, **item}), 201
    raise RuntimeError("could not generate a unique visitor pass code")


@bp.get("/visitors/<code>")
def visitor_pass(code: str) -> ResponseReturnValue:
    row = (
        get_db()
        .execute(
            "SELECT code, visitor_name, unit, valid_on, created_at FROM visitor_passes WHERE code = ?",
            (code.upper(),),
        )
        .fetchone()
    )
    if row is None:
        return jsonify(error="pase de visita no encontrado", code=code), 404
    return jsonify(dict(row))


@bp.get("/health")
def health() -> ResponseReturnValue:
    if current_app.config["FAIL_HEALTH"]:
        return jsonify(status="failing"), 503
    body = {"status": "ok", "version": current_app.config["APP_VERSION"], "replica": replica_id()}
    return jsonify({**body, **external.health_details(current_app)})


@bp.get("/work")
def work() -> ResponseReturnValue:
    ms = millis_arg(WORK_MAX_MS)
    deadline = time.process_time() + ms / 1000
    while time.process_time() < deadline:
        pass
    return jsonify(burned_ms=ms)


@bp.get("/wait")
def wait() -> ResponseReturnValue:
    ms = millis_arg(WAIT_MAX_MS)
    time.sleep(ms / 1000)
    return jsonify(waited_ms=ms)


# --- application -------------------------------------------------------------------------------


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``config`` overrides individual settings (e.g. in tests)."""
    app = Flask(__name__, root_path=str(Path(__file__).resolve().parent), static_folder=None)
    app.config.from_mapping(settings_from_env())
    if config:
        app.config.from_mapping(config)
    app.extensions["portal_db"] = Database(app.config["DATA_DIR"])
    failures = FailureInjector(app.config["ERROR_RATE"])

    @app.before_request
    def inject_failures() -> ResponseReturnValue | None:
        if request.endpoint not in ("portal.health", "metrics") and failures.should_fail():
            return jsonify(error="falla inyectada (PORTAL_ERROR_RATE)"), 500
        return None

    @app.after_request
    def identify(response: Response) -> Response:
        response.headers["X-App-Version"] = app.config["APP_VERSION"]
        response.headers["X-Replica"] = replica_id()
        return response

    @app.context_processor
    def layout_context() -> dict[str, Any]:
        return {
            "portal_name": app.config["PORTAL_NAME"],
            "version": app.config["APP_VERSION"],
            "replica": replica_id(),
        }

    app.register_error_handler(ValidationError, validation_error)
    app.register_error_handler(HTTPException, http_error)
    app.teardown_appcontext(close_db)
    app.register_blueprint(bp)
    external.install(app)
    sessions.install(app)
    return app


app = create_app()
