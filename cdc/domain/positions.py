"""Positions in the source's history: where a reader resumes, where a sink has got to."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Checkpoint(BaseModel):
    """A source transaction boundary: everything before it has been confirmed by the broker.

    ``file``/``pos`` is the position just after the transaction's commit event (the next
    event to read). ``gtid`` is the GTID position at that boundary (MariaDB
    ``domain-server-seq`` list, or a MySQL GTID set), when the server has GTIDs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    pos: int
    gtid: str | None = None
    ts_ms: int = 0

    def describe(self) -> str:
        gtid = f" gtid={self.gtid}" if self.gtid else ""
        return f"{self.file}:{self.pos}{gtid}"


class SinkOffset(BaseModel):
    """How far a sink has applied the event stream: the newest event of its last committed batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    file: str
    pos: int
    ts_ms: int
    applied_ms: int = 0
