"""What callers pass the engine and hear back loads without Optuna; the package's names load when first used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _imports(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``code``."""
    heavy = "sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'torch'})"
    probe = f"{code}\nimport json, sys; print(json.dumps({heavy}))"
    return json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)


def test_options_and_the_package_load_without_optuna_or_torch():
    # a face can build TuneOptions, check a choice and draw Progress before the engine loads
    code = (
        "from hpo_lib import engine\n"
        "from hpo_lib.engine.options import PRUNERS, Progress, TuneOptions\n"
        "assert engine.TuneOptions is TuneOptions and engine.Progress is Progress and 'manifest' in PRUNERS"
    )
    assert _imports(code) == []
    # the engine itself loads Optuna when its loop is first asked for, as before
    assert _imports("from hpo_lib import engine; engine.run") == ["optuna"]


def test_every_name_of_the_package_resolves_and_an_unknown_one_is_an_attribute_error():
    from hpo_lib import engine

    # each public name comes from its module; a submodule is reachable as an attribute, as after an import
    assert all(callable(getattr(engine, name)) for name in engine.__all__)
    assert engine.process.WARM_LOG == "warm-worker.log"
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        engine.no_such_thing  # noqa: B018
