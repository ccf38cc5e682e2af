"""What of a spec belongs to one portero and not to the group: where it listens and where its store is.

Several porteros share one spec through Redis, but each keeps its own admin address, router listeners and store
settings (on one machine their ports must differ). Pure.
"""

from __future__ import annotations

from portero.spec.models import Spec


def local(shared: Spec, own: Spec) -> Spec:
    """`shared` with this portero's own admin, router listeners (HTTP and HTTPS) and store settings."""
    update: dict[str, object] = {"host": own.router.host, "port": own.router.port}
    tls, mine = shared.router.tls, own.router.tls
    if tls is not None and mine is not None:
        update["tls"] = tls.model_copy(update={"host": mine.host, "port": mine.port, "public_port": mine.public_port})
    router = shared.router.model_copy(update=update)
    return shared.model_copy(update={"admin": own.admin, "store": own.store, "router": router})
