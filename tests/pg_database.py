"""The scratch CRM database the tests and the benchmarks write into, created where it is missing."""

from __future__ import annotations


def ensure_database(url: str) -> str:
    """Create the PostgreSQL database of ``url`` if it does not exist; returns ``url``. Raises
    ``psycopg.OperationalError`` when PostgreSQL cannot be reached (callers say how to start it)."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)).fetchone():
            try:
                conn.execute(f'CREATE DATABASE "{parsed.database}"')
            except psycopg.errors.DuplicateDatabase:
                pass  # created concurrently by another process
    return url
