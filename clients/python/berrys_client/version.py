"""The package's version, and the User-Agent its requests carry (the portal's logs tell who called)."""

__version__ = "0.1.0"
USER_AGENT = f"berrys-portal-client/{__version__}"
