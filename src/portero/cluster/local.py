"""What of a spec belongs to one portero and not to the group: where it listens and where its store is.

Several porteros share one spec through Redis, but each keeps its own admin address, router listener and store
settings (on one machine their ports must differ). Pure.
"""

from __future__ import annotations

from portero.spec.models import Spec


def local(shared: Spec, own: Spec) -> Spec:
    """`shared` with this portero's own admin, router listener and store settings."""
    router = shared.router.model_copy(update={"host": own.router.host, "port": own.router.port})
    return shared.model_copy(update={"admin": own.admin, "store": own.store, "router": router})
