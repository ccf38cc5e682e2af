"""schemathesis against a real portero: every operation of its OpenAPI document, with valid and invalid input.

No answer may be a 5xx, and every answer must match its documented status, content type and schema. The
daemon is real and the admin token is sent, so the fuzzer's changes are real too: the spec gives it one cheap
service whose name no generated value is likely to hit, `max: 2` bounds any scale, and `POST /shutdown` is
left out (it is tested, and it would end the run).
"""

from __future__ import annotations

import os
import sys
import time

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.portero_cli import Portero

SERVICE = "fuzz-target-web"
EXAMPLES_PER_MODE = int(os.environ.get("PORTERO_FUZZ_EXAMPLES", "12"))  # per operation and mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]  # not negative_data_rejection: unknown query parameters are ignored, as FastAPI (and most APIs) do


def start(portero: Portero) -> None:
    server = {
        "command": [sys.executable, "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"],
        "health": {"path": "/", "interval_s": 1},
        "replicas": {"initial": 1, "min": 0, "max": 2},
    }
    portero.write_spec({SERVICE: server})
    portero.cli("up", "--detach")
    portero.ready(1)


def test_no_5xx_and_every_answer_matches_the_schema(portero: Portero) -> None:
    start(portero)
    auth = {"Authorization": f"Bearer {portero.token}"}
    base = portero.url.removesuffix("/scalability")
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=auth).exclude(path="/scalability/shutdown")
    session = requests.Session()
    session.headers.update(auth)
    session.trust_env = False
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    calls: dict[str, int] = {}
    began = time.monotonic()

    for operation in operations:
        strategies = [
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        ]
        if "{name}" in operation.path:  # and the real service, which no generated name hits
            strategies.append(operation.as_strategy(path_parameters={"name": SERVICE}))
        strategy = st.one_of(strategies)

        @settings(
            max_examples=2 * EXAMPLES_PER_MODE,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case: Case) -> None:
            if isinstance(case.query, dict) and "follow" in case.query:
                case.query["follow"] = "false"  # a followed log never ends; following is tested on its own
            case.call_and_validate(session=session, checks=CHECKS, timeout=15)
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1

        call()

    took = time.monotonic() - began
    print(f"{sum(calls.values())} calls over {len(calls)} operations in {took:.1f} s")
    assert len(calls) == len(operations)
    assert "Traceback" not in (portero.state / "portero.log").read_text()
    assert any(e["kind"] == "service.scaled" for e in portero.events(service=SERVICE))  # it reached the real one
    assert portero.get("/health")["status"] in ("ok", "degraded")  # the daemon took it all and still answers
