"""The reader role: read a source transaction, map it, publish it, move the checkpoint only to
transaction boundaries the broker confirmed; operator position requests, reader dead letters and
the active/standby leadership through the state store's lease. It may import cdc.domain,
cdc.mapping, cdc.source, cdc.snapshot, cdc.broker, cdc.state and cdc.runtime's config, tls and
metrics; never cdc.cli.
"""
