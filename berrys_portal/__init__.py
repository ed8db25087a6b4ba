"""The Berrys Portal Django project."""

from berrys_portal.celery import app as celery_app

__all__ = ("celery_app",)
