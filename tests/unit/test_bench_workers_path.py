"""The bench's worker processes run the arbiter being measured, wherever the bench runs from.

``python -c``/``python -m`` put the working directory first on ``sys.path``: started from a
folder holding another ``arbiter_cli`` (a source checkout of another version), the workers
imported that one, so a before/after comparison measured the same code twice.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import arbiter_cli
from arbiter_cli.tools.spawn import python_command


def test_a_worker_ignores_an_arbiter_cli_in_the_working_directory(tmp_path: Path) -> None:
    shadow = tmp_path / "arbiter_cli"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('the shadow was imported')\n")
    # The tree under test goes on PYTHONPATH, as a before/after run names each tree (and as
    # mutmut's copy of the project is found by this process, not by an installed package).
    tree = str(Path(arbiter_cli.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (tree, os.environ.get("PYTHONPATH", "")) if p)}
    found = subprocess.run(python_command("-c", "import arbiter_cli; print(arbiter_cli.__file__)"),
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == arbiter_cli.__file__
