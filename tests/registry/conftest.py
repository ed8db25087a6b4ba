"""Registry test fixtures. The health/breaker/client/alert fixtures live in health_fixtures."""

import pytest

from tests.registry.health_fixtures import *  # noqa: F401,F403


@pytest.fixture
def fresh_index_feed():
    """A registry index feed started by this test and stopped after it.

    Between tests the database is flushed (its indexes start again) and, after the last,
    dropped: the feed's in-memory indexes and its connection must not outlive either.
    """
    from registry.consul_views import answers_clear
    from registry.watch import index_feed_stop

    index_feed_stop()
    answers_clear()
    yield
    index_feed_stop()
    answers_clear()
