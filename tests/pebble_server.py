"""Pebble (Debian's `pebble`: Let's Encrypt's own ACME test server) on loopback ports for the tests, with
`pebble-challtestsrv` as its DNS server (every name resolves to 127.0.0.1, so the CA's HTTP-01 check reaches the
router under test). Pebble's own HTTPS certificate comes from the tests' CA (tests/tls_ca.py); the root it issues
certificates under is fetched from its management interface (`/roots/0`, new at every start), so clients verify the
certificates portero obtained against it, never with verification off.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from portero.runtimes.ports import free_port
from tests.local_server import terminate
from tests.tls_ca import TestCA


def udp_free_port(avoid: set[int]) -> int:
    while True:
        port = free_port(avoid=avoid)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class PebbleServer:
    """`start()` and `stop()` keep the ports (a stop in the middle of a renewal, then a start again)."""

    def __init__(self, directory: Path, http_port: int, *, validity_s: int | None = None) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port  # where the CA checks HTTP-01: the router's HTTP port
        self.validity_s = validity_s  # of the certificates it issues (Pebble's default: five years)
        self.port = free_port(avoid={http_port})
        self.management_port = free_port(avoid={http_port, self.port})
        self.dns_port = udp_free_port({http_port, self.port, self.management_port})
        self.dns_management_port = free_port(avoid={http_port, self.port, self.management_port, self.dns_port})
        self.ca = TestCA(directory / "https-ca", name="pebble's HTTPS (tests)")
        self.cert_file, self.key_file = self.ca.issue(["127.0.0.1", "localhost"], name="pebble-https")
        self.process: subprocess.Popen[bytes] | None = None
        self.dns: subprocess.Popen[bytes] | None = None
        self.root_file = directory / "issuing-root.pem"

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def https_ca_file(self) -> str:
        """The CA of Pebble's own HTTPS certificate: what portero's `acme.ca_file` names."""
        return str(self.ca.root_file)

    def start(self, timeout: float = 15.0) -> None:
        if self.dns is None:
            args = ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
            args += ["-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", ""]
            args += ["-management", f"127.0.0.1:{self.dns_management_port}"]
            self.dns = subprocess.Popen(args, stdout=(self.dir / "dns.log").open("ab"), stderr=subprocess.STDOUT)
        if self.process is not None:
            return
        config: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.cert_file),
            "privateKey": str(self.key_file),
            "httpPort": self.http_port,
            "tlsPort": free_port(avoid={self.http_port, self.port, self.management_port}),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_s is not None:
            config["certificateValidityPeriod"] = self.validity_s
        path = self.dir / "pebble.json"
        path.write_text(json.dumps({"pebble": config}))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
        args = ["pebble", "-config", str(path), "-dnsserver", f"127.0.0.1:{self.dns_port}"]
        self.process = subprocess.Popen(
            args, stdout=(self.dir / "pebble.log").open("ab"), stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pebble exited with {self.process.returncode}: {self.log()}")
            try:
                self.root_file.write_bytes(self._get(f"https://127.0.0.1:{self.management_port}/roots/0"))
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pebble did not answer on port {self.management_port} within {timeout} s: {self.log()}")

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=self.https_ca_file)
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            body: bytes = response.read()
            return body

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts Pebble's issuing root alone and checks host names."""
        return ssl.create_default_context(cafile=str(self.root_file))

    def stop_ca(self) -> None:
        """Pebble alone (its DNS stays): the CA is gone, as in an outage."""
        if self.process is not None:
            terminate(self.process)
        self.process = None

    def stop(self) -> None:
        self.stop_ca()
        if self.dns is not None:
            terminate(self.dns)
        self.dns = None

    def log(self) -> str:
        path = self.dir / "pebble.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
