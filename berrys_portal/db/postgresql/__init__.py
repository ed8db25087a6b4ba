"""PostgreSQL backend without a round trip before each request's work (see ``base``)."""
