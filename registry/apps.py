from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Service registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from registry import schema  # noqa: F401 - registers the OpenAPI auth extension
        from registry.scopes import check_scope_settings

        checks.register(check_scope_settings)

        # Connects the signal that invalidates cached adapter rules when one is saved.
        from registry import adapters  # noqa: F401
