"""HTTP client of the management API; every failure becomes one clear `CliError` line."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from portero.spec.loader import SpecError, load_spec
from portero.tokens import saved_admin_token

DEFAULT_URL = "http://127.0.0.1:9900"


class CliError(Exception):
    """A failure the CLI prints as one line, without a traceback; `status`: the API's HTTP status, if it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def resolve_url(explicit: str | None, state_dir: Path, spec_file: Path) -> str:
    """--admin / PORTERO_ADMIN, else the running instance's admin.json, else the spec's admin section."""
    if explicit:
        return explicit.rstrip("/")
    info = state_dir / "admin.json"
    if info.exists():
        try:
            return str(json.loads(info.read_text())["url"])
        except (ValueError, KeyError):
            pass
    if spec_file.exists():
        try:
            return load_spec(spec_file).admin.url
        except SpecError:
            pass
    return DEFAULT_URL


def resolve_trust(state_dir: Path, spec_file: Path) -> tuple[ssl.SSLContext, str | None]:
    """What the API's HTTPS certificate is checked against, and for which name: the system's roots, plus the CA
    bundles the running portero names in admin.json (admin.tls.ca_file, its self-signed stand-in) or else the
    spec's `admin.tls.ca_file`; the name is `admin.tls.router_host` when set (the URL's host otherwise). Never
    nothing: the token must not go to whoever answers."""
    files: list[str] = []
    name: str | None = None
    info = state_dir / "admin.json"
    if info.exists():
        try:
            data = json.loads(info.read_text())
            files = [str(f) for f in data.get("ca") or []]
            name = data.get("server_name")
        except (ValueError, AttributeError):
            files = []
    if not files and spec_file.exists():
        try:
            tls = load_spec(spec_file).admin.tls
        except SpecError:
            tls = None
        if tls is not None:
            files = [tls.ca_file] if tls.ca_file is not None else []
            name = tls.router_host
    context = ssl.create_default_context()
    for file in files:
        try:
            context.load_verify_locations(cafile=file)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot read the CA bundle {file} for the admin API's certificate: {exc}") from exc
    return context, name


def resolve_token(state_dir: Path) -> str | None:
    """PORTERO_TOKEN, else the admin token `portero up` saved in the state directory."""
    return os.environ.get("PORTERO_TOKEN") or saved_admin_token(state_dir)


class Client:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        token_hint: str = "",
        verify: ssl.SSLContext | bool = True,
        server_name: str | None = None,
    ) -> None:
        self.url = url
        # the name the API's certificate is checked for, when it is not the URL's host (admin.tls.router_host)
        self._name = {"sni_hostname": server_name} if server_name else {}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, timeout=timeout_s, trust_env=False, headers=headers, verify=verify)
        self._hint = token_hint

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, f"/scalability{path}", extensions=self._name, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(f"portero is not running at {self.url} (start it with `portero up`)") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"no answer from portero at {self.url}: {exc}") from exc
        return _body(response, self._hint)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body)

    def stream(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        query = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream(
                "GET", f"/scalability{path}", params=query, timeout=None, extensions=self._name
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _body(response, self._hint)
                event = "message"
                for line in _lines(response.iter_text()):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "error":  # the server ended the stream: why
                        raise CliError(json.loads(line[6:])["error"]["message"])
                    elif line.startswith("data: "):
                        yield json.loads(line[6:])
                    elif not line:
                        event = "message"
        except httpx.ConnectError as exc:
            raise CliError(f"portero is not running at {self.url} (start it with `portero up`)") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"portero at {self.url} stopped ({type(exc).__name__})") from exc

    def alive(self) -> bool:
        try:
            return self._http.get("/scalability/health", timeout=1, extensions=self._name).status_code == 200
        except httpx.HTTPError:
            return False


def _lines(chunks: Iterator[str]) -> Iterator[str]:
    """Server-sent event lines, split on "\\n" only: httpx's `iter_lines` also splits on "\\x85" and "\\u2028",
    which a log line may hold."""
    pending = ""
    for chunk in chunks:
        *complete, pending = (pending + chunk).split("\n")
        yield from (line.removesuffix("\r") for line in complete)
    if pending:
        yield pending


def _body(response: httpx.Response, hint: str = "") -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        message = error.get("message") or f"HTTP {response.status_code}"
        problems = error.get("problems") or []
        if response.status_code == 401 and hint:
            problems = [*problems, hint]
        raise CliError("\n".join([message, *(f"  {p}" for p in problems)]), response.status_code)
    return data
