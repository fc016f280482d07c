"""Everything RabbitMQ: the topology (exchanges, queues, dead-letter routes, the event-log stream),
message grouping and batch headers, confirm tracking, the publisher and its in-memory twin, frame
encoding, and what the sink worker's and the consumer library's consume loops share (consume). This is the package that imports pika (pyproject's import contracts list the modules
outside it that still do). It may import cdc.domain and cdc.runtime.tls; nothing above it.
"""
