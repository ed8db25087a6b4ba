"""Architecture rules checked over the source tree (docs/architecture.md)."""

from __future__ import annotations

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
