"""Snapshots: chunked, lock-free reads of a table beside the binlog stream, the chunk workers, their
progress in the state store and the resume after a crash. It may import cdc.domain, cdc.mapping,
cdc.source, cdc.broker (to publish chunks), cdc.state and cdc.runtime's config and metrics; never
cdc.reader, cdc.admin or cdc.cli.
"""
