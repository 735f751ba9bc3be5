"""Nothing under ``astrid_assets/ml`` imports Dagster or MLflow, directly or through other modules.

Every module is imported in a fresh interpreter in which a ``sys.meta_path`` finder refuses the
top-level packages ``dagster``, ``dagster_*`` and ``mlflow``; a module that needs one of them fails
the test with its name and the chain of AstrID modules through which the import came.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import astrid_assets

ML = Path(astrid_assets.__file__).resolve().parent / "ml"

#: Run in the subprocess: argv[1:] are module names; prints {module: "why"} for those that needed a blocked package.
PROBE = r'''
import importlib, json, sys, traceback

BLOCKED = ("dagster", "mlflow")


class Refuse:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED or top.startswith("dagster_"):
            raise ImportError(f"import of {name!r} refused (ml/ must not need dagster or mlflow)", name=name)
        return None


sys.meta_path.insert(0, Refuse())
for blocked in ("dagster", "mlflow", "dagster_mlflow"):  # the finder itself works
    try:
        importlib.import_module(blocked)
    except ImportError:
        continue
    sys.exit(f"{blocked} imported despite the block")
failures = {}
for module in sys.argv[1:]:
    for loaded in [name for name in sys.modules if name == "astrid_assets" or name.startswith("astrid_assets.")]:
        del sys.modules[loaded]  # each module imported afresh; third-party packages (torch, numpy) stay loaded
    try:
        importlib.import_module(module)
    except ImportError as error:
        chain = []
        for frame, _ in traceback.walk_tb(error.__traceback__):
            name = frame.f_globals.get("__name__", "")
            if name.startswith("astrid_assets") and (not chain or chain[-1] != name):
                chain.append(name)
        failures[module] = f"{error} (through {' -> '.join(chain) or module})"
print(json.dumps(failures))
'''


def ml_modules() -> list[str]:
    """Every module of the ``astrid_assets.ml`` package (subpackages included), by its files."""
    modules = []
    for path in sorted(ML.rglob("*.py")):
        parts = path.relative_to(ML.parent.parent).with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_no_ml_module_needs_dagster_or_mlflow():
    modules = ml_modules()
    assert "astrid_assets.ml.metrics" in modules and "astrid_assets.ml" in modules
    result = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, "modules under astrid_assets/ml need dagster or mlflow:\n" + "\n".join(
        f"  {module}: {why}" for module, why in failures.items())
