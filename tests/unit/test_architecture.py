"""The house keeps its shape: no import cycles, and import-linter's contracts hold."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import arch  # noqa: E402 - scripts/arch.py, the AST walk behind docs/architecture.md

# The one cycle left is inside the resilience package and bootstrap (s-resil of issue 18
# removes it); every other module must be outside any cycle.
RESILIENCE_CYCLE = ("arbiter_cli.resilience.", "arbiter_cli.bootstrap")


def test_no_import_cycle_reaches_outside_the_resilience_package():
    """Module-level, function-level and TYPE_CHECKING imports all count."""
    found = arch.measure(ROOT / "arbiter_cli")["cycles"]
    assert isinstance(found, list)
    outside = [c for c in found if not all(m.startswith(RESILIENCE_CYCLE) for m in c)]
    assert outside == []


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None,
                    reason="import-linter comes with the dev extra")
def test_the_import_contracts_hold():
    """Layers, adapters below services, a pure domain: pyproject.toml [tool.importlinter]."""
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
