"""Demo legacy source: schema, deterministic seed data and a live workload for the binlog reader."""
