"""Architecture rules checked over the source tree (docs/architecture.md)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_the_import_contracts_hold_on_the_source_tree():
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_layers_contract_fails_on_an_upward_import(tmp_path):
    # The same contract shape on a miniature tree where the kernel imports the top layer.
    for pkg, body in {"kernel": "import top\n", "top": "import kernel\n"}.items():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(body)
    (tmp_path / "setup.toml").write_text(textwrap.dedent("""
        [tool.importlinter]
        root_packages = ["kernel", "top"]
        [[tool.importlinter.contracts]]
        name = "layers"
        type = "layers"
        layers = ["top", "kernel"]
    """))
    result = _lint_imports("--config", "setup.toml", cwd=tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout


# --- One write path for a service's status ---------------------------------------------------

PORTAL_PACKAGES = ("berrys_portal", "registry", "workflows", "dashboard", "simulators")
STATUS_CHANGE_OWNER = ROOT / "registry" / "models.py"
# Creating a StatusChange row: the constructor, a manager's create methods, handing the model
# to a bulk writer (e.g. ``_copy_rows(StatusChange, [...])``), or raw SQL into its table.
STATUS_CHANGE_WRITE = re.compile(
    r"StatusChange\s*\("
    r"|StatusChange\.objects\.(?:create|bulk_create|get_or_create|update_or_create)\b"
    r"|StatusChange\s*,\s*\["
    r"|(?:INSERT\s+INTO|COPY)\s+\"?registry_statuschange",
    re.IGNORECASE,
)


def _status_change_writes(text: str) -> list[str]:
    return [m.group(0) for m in STATUS_CHANGE_WRITE.finditer(text)]


def test_the_pattern_recognises_every_way_status_changes_were_written():
    # The five write sites this rule replaced, as they were written.
    for snippet in (
        "StatusChange.objects.create(service=svc, old_status=old)",
        "_copy_rows(\n    StatusChange,\n    [\"service_id\", \"service_name\"],",
        "StatusChange.objects.bulk_create(rows)",
        "cursor.execute('INSERT INTO registry_statuschange (service_id) VALUES (%s)')",
        "rows.append(StatusChange(service=svc))",
    ):
        assert _status_change_writes(snippet), snippet
    assert not _status_change_writes("StatusChange.objects.filter(service=svc).order_by('-at')")


def test_status_changes_are_written_only_by_the_registry_models_one_writer():
    offenders = {}
    for package in PORTAL_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or path == STATUS_CHANGE_OWNER:
                continue
            found = _status_change_writes(path.read_text())
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}, "write StatusChange rows through Service.flip / StatusChange.record only"
    # In the owner: the class itself, and one bulk_create (StatusChange.record).
    owner = STATUS_CHANGE_OWNER.read_text()
    assert _status_change_writes(owner) == ["StatusChange("]  # class StatusChange(models.Model)
    assert owner.count(".bulk_create(") == 1 and "cls.objects.bulk_create(rows)" in owner


# --- One write path for run and step status --------------------------------------------------

ENGINE = ROOT / "workflows" / "engine"
# transitions.py: every run/step status change; claims.py: the claim (``running`` + lease);
# statements.py: the SQL text of the hot path, executed by those two (docs/architecture.md §2).
RUN_STATUS_WRITERS = {ENGINE / "transitions.py", ENGINE / "claims.py", ENGINE / "statements.py"}
RUN_MODELS = re.compile(r"\b(?:StepRun|WorkflowRun|RunStatus|StepStatus)\b")
# A status written: a queryset's ``.update(..., status=...)`` (or ``bulk_update`` of "status"),
# an assignment to ``<obj>.status`` (also in a tuple assignment), ``save(update_fields=[..."status"...])``,
# a row created with a status, or raw SQL into the tables.
RUN_STATUS_WRITE = re.compile(
    r"\.update\((?:[^()]|\([^()]*\))*?\bstatus\s*=(?!=)"
    r"|\bbulk_update\([^)]*[\"']status[\"']"
    r"|\b\w+\.status\s*(?:,\s*[\w.]+\s*)*=(?!=)"
    r"|update_fields\s*=\s*[\[(][^\])]*[\"']status[\"']"
    r"|(?:StepRun|WorkflowRun)(?:\.objects\.(?:create|get_or_create|update_or_create))?\((?:[^()]|\([^()]*\))*?\bstatus\s*="
    r"|UPDATE\s+\"?workflows_(?:steprun|workflowrun)\b",
    re.IGNORECASE,
)


def _run_status_writes(text: str) -> list[str]:
    if not RUN_MODELS.search(text):
        return []
    return [m.group(0).splitlines()[0] for m in RUN_STATUS_WRITE.finditer(text)]


def test_the_pattern_recognises_every_way_run_and_step_status_was_written():
    # The write sites this rule moved into transitions.py (workflows/services.py's cancel and
    # retry), as they were written, and the other shapes such a write takes.
    for snippet in (
        "StepRun.objects.filter(\n    run=run, status__in=[StepStatus.QUEUED]\n"
        ").update(status=StepStatus.SKIPPED, error='x', finished_at=now)",
        "StepRun.objects.filter(run=run, index__gte=index).update(\n    status=StepStatus.PENDING, output=None)",
        "run.status, run.cancel_requested, run.finished_at = RunStatus.CANCELLED, True, now",
        "run.status, run.error, run.failed_step = RunStatus.RUNNING, '', ''",
        "step.status = StepStatus.FAILED",
        "run.save(update_fields=['status', 'cancel_requested'])",
        "WorkflowRun.objects.filter(pk=run.pk).update(error='x', status=RunStatus.FAILED)",
        "StepRun.objects.bulk_update(steps, ['status'])",
        "StepRun.objects.create(run=run, index=0, status=StepStatus.QUEUED)",
        "cursor.execute('UPDATE workflows_steprun SET status = %s')",
    ):
        assert RUN_STATUS_WRITE.search(snippet), snippet
    for snippet in (
        "StepRun.objects.filter(run=run, status=StepStatus.WAITING).order_by('index')",
        "if run.status == RunStatus.FAILED:",
        "StepRun.objects.filter(status=StepStatus.RUNNING).update(lease_expires_at=lease)",
        "run.steps.select_for_update().filter(status=StepStatus.WAITING)",
        "RunEvent.objects.create(run=run, kind=RunEvent.Kind.CANCELLED, actor=actor)",
    ):
        assert not RUN_STATUS_WRITE.search(snippet), snippet
    # Only files that touch the run/step models count: a service's status is registry's rule.
    assert not _run_status_writes("Service.objects.filter(pk=pk).update(status=new)")
    assert _run_status_writes("from workflows.models import StepRun\nStepRun.objects.update(status='x')")


def test_run_and_step_status_is_written_only_by_the_engines_transitions():
    offenders = {}
    for package in PORTAL_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or path in RUN_STATUS_WRITERS:
                continue
            found = _run_status_writes(path.read_text())
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}, "change a run's or step's status through workflows/engine/transitions.py"
    assert _run_status_writes((ENGINE / "transitions.py").read_text())  # the rule sees its writer
