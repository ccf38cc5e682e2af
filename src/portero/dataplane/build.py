"""Which router code this is: portero's version and a digest of the router's sources, so that a control plane can
tell that the router it adopted runs other code than its own (an upgrade: it restarts the router, hitless)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import portero


def _digest() -> str:
    package = Path(portero.__file__).parent
    digest = hashlib.sha256()
    for folder in ("router", "dataplane"):
        for path in sorted((package / folder).glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


BUILD = f"{portero.__version__}+{_digest()}"
