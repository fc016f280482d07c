"""The domain: the change event and its envelope (ids, versions, encoding), the optional transaction
boundary and heartbeat events (boundary), positions in the source's history (Checkpoint, SinkOffset),
the canonical field types of an entity, the error tree with its recovery text and the one secret
redactor (redact). Pure values, no I/O. It imports nothing of cdc: every other package may import it.
"""
