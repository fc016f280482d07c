"""The project's exception tree.

    CdcError
    ├── ConfigError            bad configuration or mapping: stop, name the key and the fix
    ├── SourceSetupError       the source server is set up wrong (binlog settings, grants)
    ├── TransientError         worth retrying with backoff (connection lost, timeout, 429/5xx)
    │   └── StreamInterrupted  the binlog connection dropped; reopen from the last transaction boundary
    └── TerminalError          retrying cannot help: stop with a clear message
        └── CheckpointLost     the checkpoint's binlog is gone from the server

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


class CheckpointLost(TerminalError):
    pass
