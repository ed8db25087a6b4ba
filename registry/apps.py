from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Service registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the signal that invalidates cached adapter rules when one is saved.
        from registry import adapters  # noqa: F401
