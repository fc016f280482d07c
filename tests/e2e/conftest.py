import pytest

from e2e_support import drop_world, make_world


@pytest.fixture
def world(tmp_path, source_server, pg_url, amqp_url):
    w = make_world(tmp_path, source_server, pg_url, amqp_url)
    yield w
    drop_world(w)


@pytest.fixture
def world_factory(tmp_path, source_server, pg_url, amqp_url):
    """make(extra_yaml) -> world, for tests that need other settings (e.g. a snapshot section)."""
    made = []

    def make(extra_yaml: str = "", extra_sinks: str = ""):
        made.append(make_world(tmp_path, source_server, pg_url, amqp_url, extra_yaml, extra_sinks))
        return made[-1]

    yield make
    for w in made:
        drop_world(w)
