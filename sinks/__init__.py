"""Sinks: one module per target, one small interface for all (see :mod:`cdc.sinks.base`), one table per
sink sorting its driver's errors into transient and terminal ones (see :mod:`cdc.sinks.errors`)."""

from cdc.sinks.base import Rejection, Sink, SinkConfig, SinkContext, get_sink_type, register_sink, sink_types

__all__ = ["Rejection", "Sink", "SinkConfig", "SinkContext", "get_sink_type", "register_sink", "sink_types"]
