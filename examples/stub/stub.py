"""A stand-in for an external service the portal does not control: the community's payments provider.

Stdlib only. It can be made slow or failing on demand, to show what the portal does then:

    python stub.py --port 5100
    curl -X POST localhost:5100/control -d '{"mode": "fail"}'          # every call answers 503
    curl -X POST localhost:5100/control -d '{"mode": "slow", "delay_s": 2}'
    curl -X POST localhost:5100/control -d '{"mode": "ok"}'

- `GET /balance/<unit>`: the unit's balance of expenses (`expensas`), JSON.
- `POST /control` `{"mode": "ok"|"fail"|"slow", "delay_s": 0..60}`; `GET /control`: the mode and the count of
  balance requests answered, by status.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "fail", "slow")
MAX_DELAY_S = 60.0


class Behaviour:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = "ok"
        self.delay_s = 1.0
        self.served: dict[str, int] = {}

    def set(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("mode") not in MODES:
            raise ValueError(f"'mode' must be one of {', '.join(MODES)}")
        delay = body.get("delay_s", self.delay_s)
        if not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY_S:
            raise ValueError(f"'delay_s' must be a number of seconds between 0 and {MAX_DELAY_S:g}")
        with self.lock:
            self.mode, self.delay_s = body["mode"], float(delay)
        return self.show()

    def show(self) -> dict[str, Any]:
        with self.lock:
            return {"mode": self.mode, "delay_s": self.delay_s, "served": dict(self.served)}

    def count(self, status: int) -> None:
        with self.lock:
            self.served[str(status)] = self.served.get(str(status), 0) + 1


class Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/control":
            self._send(200, self.behaviour.show())
        elif self.path.startswith("/balance/") and len(self.path) > len("/balance/"):
            self._balance(self.path.removeprefix("/balance/"))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/control":
            self._send(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            self._send(200, self.behaviour.set(json.loads(self.rfile.read(length) or b"null")))
        except (ValueError, json.JSONDecodeError) as exc:
            self._send(400, {"error": str(exc)})

    def _balance(self, unit: str) -> None:
        state = self.behaviour.show()
        if state["mode"] == "slow":
            time.sleep(state["delay_s"])
        if state["mode"] == "fail":
            self.behaviour.count(503)
            self._send(503, {"error": "payments provider unavailable (stub in mode fail)"})
            return
        cents = zlib.crc32(unit.encode()) % 500_000  # the same made-up balance for a unit every time
        self.behaviour.count(200)
        self._send(200, {"unit": unit, "balance": round(cents / 100, 2), "currency": "ARS", "due": "2026-12-10"})

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"behaviour": Behaviour()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 5100))
    args = parser.parse_args()
    server = serve(args.host, args.port)
    print(f"payments stub on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
