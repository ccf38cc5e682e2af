"""Where desired state, replicas, revisions and events live."""

from portero.store.base import ServerRecord, ServiceRecord, Store
from portero.store.sqlite import SqliteStore

__all__ = ["ServerRecord", "ServiceRecord", "SqliteStore", "Store"]
