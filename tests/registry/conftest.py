"""Registry test fixtures. The health/breaker/client/alert fixtures live in health_fixtures."""

from tests.registry.health_fixtures import *  # noqa: F401,F403
