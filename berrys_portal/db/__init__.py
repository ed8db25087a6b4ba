"""Database backends (see postgresql.base)."""
