"""The house keeps its shape: no import cycles, and import-linter's contracts hold.

A tier of its own (not tests/unit): it reads scripts/ and runs lint-imports, which the
isolated workspace of `arbiter mutate` does not hold.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import arch  # noqa: E402 - scripts/arch.py, the AST walk behind docs/architecture.md


def test_no_module_is_part_of_an_import_cycle():
    """Module-level, function-level and TYPE_CHECKING imports all count (scripts/arch.py)."""
    found = arch.measure(ROOT / "arbiter_cli")["cycles"]
    assert found == []


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None,
                    reason="import-linter comes with the dev extra")
def test_the_import_contracts_hold():
    """Layers, adapters below services, a pure domain: pyproject.toml [tool.importlinter]."""
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
