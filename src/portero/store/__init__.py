"""Where desired state, replicas, revisions and events live."""

from portero.store.base import ServerRecord, ServiceRecord, StaleLeader, Store, StoreUnavailable
from portero.store.sqlite import SqliteStore

__all__ = ["ServerRecord", "ServiceRecord", "SqliteStore", "StaleLeader", "Store", "StoreUnavailable"]
