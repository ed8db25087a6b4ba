"""WSGI entry point for gunicorn: ``gunicorn berrys_portal.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
application = get_wsgi_application()
