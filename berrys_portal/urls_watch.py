"""URLs of the ASGI watch server (``Procfile``'s ``watch``): the blocking endpoints only.

Route ``/v1/`` and watches (``?index=``) of ``/registry/services`` and
``/discovery/{type}`` here; everything else stays on the regular server.
"""

from django.urls import include, path

# The routes are the registry's (the kernel imports no app; the URLconf names it by string).
urlpatterns = [path("", include("registry.urls_watch"))]

handler400 = "berrys_portal.errors.json_bad_request"  # a disallowed Host, as on the regular server
handler404 = "berrys_portal.errors.json_page_not_found"
handler500 = "berrys_portal.errors.json_server_error"
