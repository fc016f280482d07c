"""The binlog source: the stream reader (connection, GTIDs, transactions, ticks), the row decoder and
its C extension, the start-up checks of the server and of the replication user's grants, the
schema history and the DDL that empties tables, and the step from a source transaction to change
events. It may import cdc.domain, cdc.mapping and cdc.runtime's config, tls and metrics, and
cdc.broker for the schema-change queue; never cdc.reader, cdc.snapshot, cdc.admin or cdc.cli.
"""
