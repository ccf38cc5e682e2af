"""Where desired state, replicas, revisions and events live."""

from portero.store.base import ServiceRecord, Store
from portero.store.sqlite import SqliteStore

__all__ = ["ServiceRecord", "SqliteStore", "Store"]
