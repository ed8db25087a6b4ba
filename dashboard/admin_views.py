"""Custom admin views behind the dashboard's buttons. Operators only (403 otherwise)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from berrys_portal.errors import PortalError
from berrys_portal.roles import OPERATE_RUN, operate_required


@require_POST
@operate_required(OPERATE_RUN)
def run_retry_view(request: HttpRequest, run_id) -> HttpResponseRedirect:
    """Retry a failed run from its failed step, then go back where the button was."""
    from workflows.models import WorkflowRun
    from workflows.services import run_retry

    run = get_object_or_404(WorkflowRun, pk=run_id)
    try:
        run_retry(run_id=run.pk, actor=request.user.get_username())
    except PortalError as exc:
        messages.error(request, f"Run {str(run.pk)[:8]} was not retried: {exc.message}")
    else:
        messages.success(request, f"Run {str(run.pk)[:8]} ({run.workflow}) retried from its failed step.")
    target = request.POST.get("next") or reverse("admin:index")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("admin:index")
    return HttpResponseRedirect(target)
