"""The operator's toolkit behind `cdc status | offsets | replay | dlq | verify`.

Each module holds the logic of one command and no CLI code, so that the admin HTTP API can call
the same functions; it may import the role packages, cdc.runtime's config and cdc.state, never
cdc.cli. Operator mistakes raise the errors below; the CLI maps them to exit codes:

    0  success                      3  verify found differences
    1  a service failed or refused   4  refused: a running daemon owns that position (lease)
    2  bad usage or configuration    5  position not usable (malformed, not in the binlog, purged)
"""

from __future__ import annotations

from cdc.domain.errors import CdcError, ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DIFFERENCES = 3
EXIT_LEASE_HELD = 4
EXIT_BAD_POSITION = 5


class PositionError(CdcError):
    """A position the operator gave cannot be used: malformed, not in the binlog, purged, in the future."""


class LeaseHeld(CdcError):
    """A running process owns the position the operator wants to change."""


class NoReader(CdcError):
    """A request for the running reader, and no reader is running."""


class UnknownSink(ConfigError):
    pass


def exit_code(exc: Exception) -> int:
    if isinstance(exc, PositionError):
        return EXIT_BAD_POSITION
    if isinstance(exc, LeaseHeld):
        return EXIT_LEASE_HELD
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    return EXIT_FAILED


def sink_config(settings, name: str):
    """The named sink's config, or UnknownSink listing the configured ones."""
    try:
        return settings.sinks[name]
    except KeyError:
        known = ", ".join(sorted(settings.sinks)) or "none"
        raise UnknownSink(f"unknown sink {name!r}; configured sinks: {known} (see the `sinks` section of the config)") from None
