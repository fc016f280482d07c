"""The project's exception tree.

    CdcError
    ├── ConfigError            bad configuration or mapping: stop, name the key and the fix
    ├── SourceSetupError       the source server is set up wrong (binlog settings, grants)
    ├── TransientError         worth retrying with backoff (connection lost, timeout, 429/5xx)
    │   └── StreamInterrupted  the binlog connection dropped; reopen from the last transaction boundary
    └── TerminalError          retrying cannot help: stop with a clear message
        ├── CheckpointLost     the checkpoint's binlog is gone from the server
        ├── PositionsWentBack  the server's binlog positions sort below the checkpoint's (another numbering)
        └── QueueArgumentsChanged  a broker queue exists with other arguments than the settings give

Driver exceptions are translated into these at each adapter's edge. A single bad event is
not an exception at this level: sinks report it as a rejection and it goes to the DLQ.
"""


class CdcError(Exception):
    """Base class; ``str(err)`` is a message fit for an operator."""


class ConfigError(CdcError):
    pass


class SourceSetupError(CdcError):
    pass


class TransientError(CdcError):
    pass


class StreamInterrupted(TransientError):
    pass


class TerminalError(CdcError):
    pass


class _WithWayOut(TerminalError):
    """``problem`` says what is wrong; the message adds the class's ``RECOVERY``, in commands that run
    as printed (tests/unit/test_cli.py parses them)."""

    RECOVERY = ""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem} {self.RECOVERY}")
        self.problem = problem


class CheckpointLost(_WithWayOut):
    """The checkpoint's binlog is gone from the server."""

    RECOVERY = (
        "Recover with a snapshot: `cdc offsets reset --source --latest` (the stream restarts at the binlog head), "
        "then `cdc snapshot start --all` (every mapped table, read while the daemon streams); or set "
        "`snapshot.mode: when_needed` and the daemon does both by itself at its next start."
    )


class PositionsWentBack(_WithWayOut):
    """The server's binlog positions sort below the checkpoint's: a promoted replica, ``RESET MASTER``
    or a renamed ``log_bin`` numbers its binlog anew. Event versions are built from positions, so the
    sinks, holding higher versions, would ignore every change to the rows they have: refused, never
    streamed silently."""

    RECOVERY = (
        "Every event's version is built from its binlog position, so the new events would sort below the "
        "versions the sinks hold and every sink would ignore the changes to rows it already has. Rebuild "
        "the sinks for this binlog (docs/runbook.md, 'Binlog positions went backwards'): stop the sink "
        "workers and empty every sink (and the idempotency stores of cdc.consumer subscribers), "
        "`cdc offsets reset --source --latest`, start the daemon, then `cdc snapshot start --all`."
    )


class QueueArgumentsChanged(TerminalError):
    """A queue exists with other arguments than the configuration gives (RabbitMQ refuses to change a
    queue's arguments, 406 PRECONDITION_FAILED): retrying cannot help. Names the queue, the setting
    and the ways out."""
