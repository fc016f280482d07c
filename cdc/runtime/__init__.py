"""The runtime: configuration (one root model, environment overrides), the composition root that
builds every collaborator (bootstrap), the library patches installed at start-up (patches), the
daemon and its role threads, the HTTP server (metrics, health, admin API, status page), the monitor,
logs with secret masking, malloc tuning and TLS helpers. Its top modules (bootstrap, patches, daemon,
http, monitor) may import every role package; its leaf modules (config, tls, metrics, logs, health,
malloc, nulled) import only cdc.domain, the sink registry and the state store. Never cdc.cli.
"""
