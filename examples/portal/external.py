"""The portal's calls to services it does not control, through `portero.resilience` (docs/resilience.md).

Payments: `/expensas/<unit>` shows a unit's balance of expenses, asked of the payments provider at
`PAYMENTS_URL` (examples/stub stands in for it). The call has a policy: a 0.5 s timeout per attempt, one retry
on a transport error or a 5xx, and a breaker that opens after `PAYMENTS_FAIL_MAX` failures; while it is open
the page renders at once without the balance ("degraded") instead of waiting for a provider known to be down,
and `/health` says `degraded` with the breaker's state, still answering 200: the portal itself works, and
taking it out of rotation would not bring the provider back.

Environment: `PAYMENTS_URL` (unset: the page says payments are not configured), `PAYMENTS_TIMEOUT_S` (0.5),
`PAYMENTS_FAIL_MAX` (3), `PAYMENTS_RESET_S` (10), `REDIS_URL` (share the breaker with every replica).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import ProxyHandler, build_opener

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue

try:
    from portero.resilience import OPEN, Breaker, Policy, Retry, exposition
except ImportError:  # the Docker image installs requirements.txt only: no payments page, no /metrics there
    AVAILABLE = False
else:
    AVAILABLE = True

UNIT_MAX = 40
# urllib rather than httpx: importing httpx (which brings rich and click) added 0.3 s to each replica's start.
_OPENER = build_opener(ProxyHandler({}))  # no proxy from the environment: the provider is called directly


class UpstreamError(Exception):
    """The provider answered 5xx: its failure, worth a retry."""


class TransportError(Exception):
    """The provider could not be reached or dropped the connection: worth a retry."""


class UnknownUnit(Exception):
    """The provider does not know the unit: an answer, not a failure (the breaker does not count it)."""


@dataclass
class Payments:
    url: str | None
    policy: Policy

    @classmethod
    def from_env(cls) -> Payments:
        policy = Policy(
            "payments",
            retry=Retry(
                attempts=2,
                initial_s=0.05,
                max_s=0.2,
                jitter_s=0.05,
                total_s=1.0,
                on=(TransportError, UpstreamError, TimeoutError),
            ),
            breaker=Breaker(
                fail_max=int(os.environ.get("PAYMENTS_FAIL_MAX") or 3),
                reset_s=float(os.environ.get("PAYMENTS_RESET_S") or 10),
                exclude=(UnknownUnit,),
            ),
            timeout_s=float(os.environ.get("PAYMENTS_TIMEOUT_S") or 0.5),
            fallback=lambda _exc: None,
        )
        return cls(os.environ.get("PAYMENTS_URL") or None, policy)

    def balance(self, unit: str) -> dict[str, Any] | None:
        """The unit's balance, or None when the provider cannot answer (the fallback)."""
        result: dict[str, Any] | None = self.policy.call(self._fetch, unit)
        return result

    def _fetch(self, unit: str) -> dict[str, Any]:
        assert self.url is not None
        url = f"{self.url}/balance/{quote(unit, safe='')}"
        try:
            with _OPENER.open(url, timeout=self.policy.timeout_s) as response:
                body: dict[str, Any] = json.load(response)
                return body
        except HTTPError as exc:
            if exc.code == 404:
                raise UnknownUnit(unit) from None
            if exc.code >= 500:
                raise UpstreamError(f"payments answered {exc.code}") from None
            raise
        except URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise TimeoutError(str(exc.reason)) from None
            raise TransportError(str(exc.reason)) from None
        except OSError as exc:  # a reset or a read timeout after the connection was made
            if isinstance(exc, TimeoutError):
                raise
            raise TransportError(str(exc)) from None

    def health(self) -> dict[str, Any]:
        state = self.policy.state
        return {"url": self.url, "breaker": state, "degraded": state == OPEN}


bp = Blueprint("external", __name__)


def payments() -> Payments:
    found: Payments = current_app.extensions["payments"]
    return found


@bp.get("/expensas/<unit>")
def balance(unit: str) -> ResponseReturnValue:
    began = time.perf_counter()
    service = payments()
    if len(unit) > UNIT_MAX:
        return jsonify(error=f"'unit' admite como máximo {UNIT_MAX} caracteres", field="unit"), 400
    configured = service.url is not None
    try:
        found = service.balance(unit) if configured else None
    except UnknownUnit:
        return jsonify(error="unidad desconocida para el sistema de pagos", unit=unit), 404
    degraded = configured and found is None
    headers = {"X-Degraded": "payments"} if degraded else {}
    took_ms = round((time.perf_counter() - began) * 1000, 1)
    if request.args.get("format") == "json":
        body = {
            "unit": unit,
            "balance": found,
            "degraded": degraded,
            "breaker": service.policy.state,
            "took_ms": took_ms,
        }
        return jsonify(body), headers
    page = render_template("expensas.html", unit=unit, balance=found, configured=configured, degraded=degraded)
    return page, headers


def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, content_type=content_type)


def install(app: Flask) -> None:
    """The payments page and the app's own `/metrics` (every resilience policy's state and outcomes)."""
    if not AVAILABLE:
        return
    app.extensions["payments"] = Payments.from_env()
    app.register_blueprint(bp)
    app.add_url_rule("/metrics", "metrics", metrics)


def health_details(app: Flask) -> dict[str, Any]:
    """For `/health`: each dependency's breaker, and status `degraded` while one is open (still a 200)."""
    service: Payments | None = app.extensions.get("payments")
    if service is None or service.url is None:
        return {}
    details = service.health()
    return {"dependencies": {"payments": details}, **({"status": "degraded"} if details["degraded"] else {})}
