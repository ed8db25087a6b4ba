"""Admin for workflow runs: a list that stays fast with millions of rows, a run page, operator actions.

Actions (retry, retry with edited input, rerun from a step, cancel, answer) are thin:
they call ``workflows.services`` with the operator's username, which records a RunEvent.

(About 430 lines, over the ~400 the project aims for: one ``ModelAdmin`` with its list
helpers, run page and action views, which Django wants in one class; the actions themselves
live in ``workflows.services``.)
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property

from berrys_portal import charts
from berrys_portal.errors import PortalError
from berrys_portal.formatting import PrettyJSONField, json_block
from berrys_portal.roles import OperateAdminMixin, can_operate_runs
from workflows import definitions, services
from workflows.failure import failure_headline
from workflows.models import (
    RUN_FINISHED,
    RunEvent,
    RunStatus,
    StepAttempt,
    StepRun,
    StepStatus,
    WorkflowRun,
)

# --------------------------------------------------------------------------- list helpers


class CappedCountPaginator(Paginator):
    """Never runs an unbounded COUNT(*) over the runs table.

    On PostgreSQL it first asks the planner (``EXPLAIN``, no rows read) how many rows the
    list's query returns; above ``CAP`` that estimate is the count ("about N", like the
    first pages of a search engine). At or below ``CAP`` it counts exactly, reading at most
    ``CAP + 1`` rows. With a million runs an exact count costs more than the page itself.

    The ``EXPLAIN`` estimate is PostgreSQL-only and earns its place by a figure
    (``bench/workflows_admin.py``, 1,000,000 runs, docs/benchmarks.md "Workflows"): the
    status filter's page took 1,413 ms with the capped count reading 10,001 rows under load,
    31.7 ms with the estimate; a full ``COUNT(*)`` alone is 68.6 ms. SQLite (the demo's
    database, thousands of runs) has no row estimate to ask for and uses the capped count.
    """

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not hasattr(qs, "query"):
            return len(qs)
        if connection.vendor == "postgresql":
            estimate = self._planner_estimate(qs)
            if estimate is not None and estimate > self.CAP:
                return estimate
        return qs[: self.CAP + 1].count()

    @staticmethod
    def _planner_estimate(qs) -> int | None:
        try:
            sql, params = qs.order_by().query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
        except Exception:  # noqa: BLE001 - fall back to the capped exact count
            return None
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])


class WorkflowFilter(admin.SimpleListFilter):
    """Choices come from the definitions registry, not from a DISTINCT over the runs table."""

    title = "workflow"
    parameter_name = "workflow"

    def lookups(self, request, model_admin):
        return [(wf.name, wf.name) for wf in definitions.all()]

    def queryset(self, request, queryset):
        return queryset.filter(workflow=self.value()) if self.value() else queryset


class FailedRecentlyFilter(admin.SimpleListFilter):
    title = "failed recently"
    parameter_name = "failed_within"

    def lookups(self, request, model_admin):
        return [("24h", "Failed in the last 24 h"), ("1h", "Failed in the last hour")]

    def queryset(self, request, queryset):
        hours = {"24h": 24, "1h": 1}.get(self.value())
        if not hours:
            return queryset
        since = timezone.now() - timedelta(hours=hours)
        return queryset.filter(status=RunStatus.FAILED, finished_at__gte=since)


def _badge(status: str) -> str:
    return charts.status_badge(status)


def run_offers(run: WorkflowRun, *, waiting: bool) -> dict[str, bool]:
    """Which operator actions apply to the run in its state (the services refuse the others anyway)."""
    finished = run.status in RUN_FINISHED
    offers = {
        "retry": run.status == RunStatus.FAILED,
        "resume": run.status == RunStatus.CANCELLED,
        "edit_input": finished,  # from the failed step, or (succeeded runs) from a chosen one
        "rerun": finished,
        "cancel": not finished,
        "answer": waiting and run.status == RunStatus.WAITING,
    }
    return {**offers, "any": any(offers.values())}


# --------------------------------------------------------------------------- forms


class EditInputForm(forms.Form):
    input = PrettyJSONField(widget=forms.Textarea(attrs={"rows": 14, "cols": 90, "style": "font-family:monospace"}),
                            help_text="The run's new input (a JSON object). The run restarts from its failed step.")
    from_step = forms.ChoiceField(required=False, help_text="Restart here instead (optional).")

    def __init__(self, *args, step_names: list[str], has_failed_step: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        steps = [(n, n) for n in step_names]
        if has_failed_step:
            self.fields["from_step"].choices = [("", "— the failed step —"), *steps]
        else:  # nothing failed: the operator says where to start again
            self.fields["from_step"].choices = steps
            self.fields["from_step"].required = True
            self.fields["from_step"].help_text = "Rerun from this step with the new input."

    def clean_input(self):
        value = self.cleaned_data["input"]
        if not isinstance(value, dict):
            raise forms.ValidationError("The input must be a JSON object.")
        return value


class RerunForm(forms.Form):
    from_step = forms.ChoiceField(help_text="Steps before this keep their outputs; this one and the rest run again.")

    def __init__(self, *args, step_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["from_step"].choices = [(n, n) for n in step_names]


class AnswerForm(forms.Form):
    step = forms.ChoiceField()
    data = PrettyJSONField(initial=dict, widget=forms.Textarea(attrs={"rows": 8, "cols": 90,
                                                                     "style": "font-family:monospace"}),
                           help_text="The answer (a JSON object), merged into the run's context.")

    def __init__(self, *args, step_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["step"].choices = [(n, n) for n in step_names]

    def clean_data(self):
        value = self.cleaned_data["data"]
        if not isinstance(value, dict):
            raise forms.ValidationError("The answer must be a JSON object.")
        return value


# --------------------------------------------------------------------------- the run admin



def _annotate_delivery(run: WorkflowRun, steps: list[StepRun]) -> None:
    """Give each step ``delivery`` ("exactly once" / "at least once") and the header its key goes in."""
    try:
        wf = definitions.get(run.workflow, run.version)
    except definitions.UnknownWorkflow:
        wf = None
    for step in steps:
        spec = wf.steps[step.index] if wf and step.index < len(wf.steps) else None
        step.delivery = spec.delivery if spec else ""
        step.idempotency_header = spec.idempotency_header if spec and spec.kind == "http" else None

@admin.register(WorkflowRun)
class WorkflowRunAdmin(OperateAdminMixin, admin.ModelAdmin):
    list_display = ("short_id", "workflow", "status_badge", "duration", "failed_step", "started_at", "triggered_by")
    list_filter = (WorkflowFilter, "status", FailedRecentlyFilter)

    def changelist_view(self, request, extra_context=None):
        # One workflow's page (filtered by it): can it start now? (workflows/readiness.py)
        name = request.GET.get("workflow")
        if name:
            from workflows.readiness import workflow_readiness

            try:
                report = workflow_readiness(workflow=definitions.get(name))
            except definitions.UnknownWorkflow:
                report = None
            if report is not None:
                report["down"] = [r for r in report["required"] + report["optional"] if not r["available"]]
                extra_context = {**(extra_context or {}), "readiness": report}
        return super().changelist_view(request, extra_context)
    search_fields = ("id",)
    search_help_text = "A run id, or its first 8+ characters."
    ordering = ("-created_at",)
    # Runs have no foreign keys to join; set explicitly so nothing adds per-row queries.
    list_select_related = ()
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    actions = ("retry_runs", "cancel_runs")
    change_form_template = "admin/workflows/workflowrun/change_form.html"
    readonly_fields = ("id", "workflow", "version", "status", "error", "failed_step", "idempotency_key",
                       "triggered_by", "owner_key", "created_at", "started_at", "finished_at", "input_json",
                       "context_json")
    fieldsets = (
        (None, {"fields": ("id", ("workflow", "version"), "status", "failed_step", ("triggered_by", "owner_key"),
                           "idempotency_key", ("created_at", "started_at", "finished_at"))}),
        ("Data", {"fields": ("input_json", "context_json"), "classes": ("collapse",)}),
    )

    @admin.display(description="input")
    def input_json(self, run: WorkflowRun) -> str:
        return json_block(run.input)

    @admin.display(description="context")
    def context_json(self, run: WorkflowRun) -> str:
        return json_block(run.context)

    # -- list columns
    @admin.display(description="run", ordering="created_at")
    def short_id(self, run: WorkflowRun) -> str:
        return str(run.pk)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: WorkflowRun) -> str:
        return _badge(run.status)

    @admin.display(description="duration")
    def duration(self, run: WorkflowRun) -> str:
        seconds = run.duration_seconds
        return "—" if seconds is None else f"{seconds:.2f} s"

    # -- search by id (exact, or an indexed range for a hex prefix)
    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lower().replace("-", "")
        if not term:
            return queryset, False
        if len(term) < 8 or any(c not in "0123456789abcdef" for c in term) or len(term) > 32:
            return queryset.none(), False
        low = uuid.UUID(term.ljust(32, "0"))
        high = uuid.UUID(term.ljust(32, "f"))
        return queryset.filter(pk__gte=low, pk__lte=high), False

    # -- permissions: runs are created by the engine, never by hand
    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    # -- bulk actions
    @admin.action(description="Retry selected failed runs from their failed step", permissions=["operate_run"])
    def retry_runs(self, request, queryset):
        self._bulk(request, queryset, "retried", lambda run: services.run_retry(
            run_id=run.pk, actor=request.user.get_username()))

    @admin.action(description="Cancel selected runs", permissions=["operate_run"])
    def cancel_runs(self, request, queryset):
        self._bulk(request, queryset, "cancelled", lambda run: services.run_cancel(
            run_id=run.pk, actor=request.user.get_username()))

    def _bulk(self, request, queryset, verb: str, action) -> None:
        done, refused = 0, []
        for run in queryset.only("pk")[:1000]:
            try:
                action(run)
                done += 1
            except PortalError as exc:
                refused.append(f"{str(run.pk)[:8]}: {exc.message}")
        if done:
            self.message_user(request, f"{done} run(s) {verb}.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"{len(refused)} refused — " + "; ".join(refused[:10]), messages.WARNING)

    # -- the run page
    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<uuid:run_id>/retry/", wrap(self.retry_view), name="workflows_workflowrun_retry"),
            path("<uuid:run_id>/cancel/", wrap(self.cancel_view), name="workflows_workflowrun_cancel"),
            path("<uuid:run_id>/edit-input/", wrap(self.edit_input_view), name="workflows_workflowrun_edit_input"),
            path("<uuid:run_id>/rerun/", wrap(self.rerun_view), name="workflows_workflowrun_rerun"),
            path("<uuid:run_id>/answer/", wrap(self.answer_view), name="workflows_workflowrun_answer"),
        ] + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        try:
            uuid.UUID(str(object_id))
        except ValueError:  # the admin's own "does not exist" handling
            return super().change_view(request, object_id, form_url, extra_context)
        attempts = Prefetch("attempts", queryset=StepAttempt.objects.order_by("number"))
        run = get_object_or_404(WorkflowRun, pk=object_id)
        steps = list(StepRun.objects.filter(run=run).order_by("index").prefetch_related(attempts))
        waiting = [s for s in steps if s.status == StepStatus.WAITING]
        _annotate_delivery(run, steps)
        extra = {
            "title": f"Workflow run {str(run.pk)[:8]}",
            "run": run,
            "steps": steps,
            "events": list(RunEvent.objects.filter(run=run).order_by("at")),
            "status_badge": _badge(run.status),
            "can_act": can_operate_runs(request.user),
            "failure": failure_headline(run=run, steps=steps),
            "waiting_steps": self._waiting(run, waiting),
            "answer_initial": '{"answer": ""}',
            "offer": run_offers(run, waiting=bool(waiting)),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    @staticmethod
    def _waiting(run: WorkflowRun, waiting: list[StepRun]) -> list[dict[str, Any]]:
        """Each waiting step with its prompt and, when the context has one, the question asked."""
        if not waiting:
            return []
        try:
            wf = definitions.get(run.workflow, run.version)
        except LookupError:  # a definition removed since: still show the step
            wf = None
        out = []
        for step in waiting:
            spec = wf.steps[step.index].human if wf and step.index < len(wf.steps) else None
            question = (run.context or {}).get("question")
            out.append({"step": step, "prompt": spec.prompt if spec else "",
                        "question": question if isinstance(question, str) else ""})
        return out

    def _run_or_deny(self, request, run_id) -> WorkflowRun:
        run = get_object_or_404(WorkflowRun, pk=run_id)
        if not can_operate_runs(request.user):  # Operators only (berrys_portal.roles)
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        return run

    def _back(self, run_id) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:workflows_workflowrun_change", args=[run_id]))

    def _do(self, request, run_id, done: str, action) -> HttpResponseRedirect:
        try:
            action()
            self.message_user(request, done, messages.SUCCESS)
        except PortalError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        return self._back(run_id)

    def retry_view(self, request: HttpRequest, run_id):
        run = self._run_or_deny(request, run_id)
        if request.method != "POST":
            return self._back(run_id)
        return self._do(request, run.pk, "Run retried from its failed step.", lambda: services.run_retry(
            run_id=run.pk, actor=request.user.get_username()))

    def cancel_view(self, request: HttpRequest, run_id):
        run = self._run_or_deny(request, run_id)
        if request.method != "POST":
            return self._back(run_id)
        return self._do(request, run.pk, "Run cancelled.", lambda: services.run_cancel(
            run_id=run.pk, actor=request.user.get_username()))

    def _step_names(self, run: WorkflowRun) -> list[str]:
        return list(run.steps.order_by("index").values_list("name", flat=True))

    def edit_input_view(self, request: HttpRequest, run_id):
        run = self._run_or_deny(request, run_id)
        names = self._step_names(run)
        has_failed = run.steps.filter(status=StepStatus.FAILED).exists() or run.status == RunStatus.CANCELLED
        form = EditInputForm(request.POST or None, initial={"input": run.input}, step_names=names,
                             has_failed_step=has_failed)
        if request.method == "POST" and form.is_valid():
            return self._do(request, run.pk, "Run retried with the edited input.", lambda: services.run_retry(
                run_id=run.pk, actor=request.user.get_username(), input=form.cleaned_data["input"],
                from_step=form.cleaned_data["from_step"] or None))
        return self._form_page(request, run, form, "Retry with edited input", "Retry with this input")

    def rerun_view(self, request: HttpRequest, run_id):
        run = self._run_or_deny(request, run_id)
        form = RerunForm(request.POST or None, step_names=self._step_names(run))
        if request.method == "POST" and form.is_valid():
            step = form.cleaned_data["from_step"]
            return self._do(request, run.pk, f"Run restarted from step {step}.", lambda: services.run_retry(
                run_id=run.pk, actor=request.user.get_username(), from_step=step))
        return self._form_page(request, run, form, "Rerun from a step", "Rerun")

    def answer_view(self, request: HttpRequest, run_id):
        run = self._run_or_deny(request, run_id)
        waiting = list(run.steps.filter(status=StepStatus.WAITING).order_by("index"))
        form = AnswerForm(request.POST or None, step_names=[s.name for s in waiting])
        if request.method == "POST" and form.is_valid():
            return self._do(request, run.pk, "Answer recorded; the run goes on.", lambda: services.run_answer(
                run_id=run.pk, actor=request.user.get_username(), step=form.cleaned_data["step"],
                data=form.cleaned_data["data"]))
        return self._form_page(request, run, form, "Answer the waiting step", "Answer",
                               waiting_steps=self._waiting(run, waiting))

    def _form_page(self, request, run, form, title: str, submit: str, **extra: Any) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta, "original": run, "run": run, "form": form, "title": title,
            "submit_label": submit, **extra,
        }
        return TemplateResponse(request, "admin/workflows/workflowrun/action_form.html", context)
