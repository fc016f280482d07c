"""State of the service (source checkpoints, sink offsets, audit trail), through SQLAlchemy.

Embedded default: a SQLite file. Production: PostgreSQL, by URL.
"""

from cdc.state.store import MemoryStateStore, SqlStateStore, StateStore, open_state_store

__all__ = ["MemoryStateStore", "SqlStateStore", "StateStore", "open_state_store"]
