"""The KFP DAG lives in the package (hpo_lib.pipeline.dag): the checkout's pipelines/katib_hpo.py only re-exports it,
and `hpo pipeline compile` writes the committed YAML in a checkout and a file of its own anywhere else."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from hpo_lib import cli
from hpo_lib.pipeline import dag
from tests.conftest import ROOT

COMMITTED = ROOT / "pipelines" / "katib_hpo_pipeline.yaml"


def test_the_checkout_entry_point_re_exports_the_package_dag():
    spec = importlib.util.spec_from_file_location("katib_hpo_entry", ROOT / "pipelines" / "katib_hpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # one definition: the pipeline, its compiler and its local runner are the package's own objects
    assert module.katib_hpo is dag.katib_hpo
    assert module.compile_pipeline is dag.compile_pipeline and module.run_local is dag.run_local
    # and its COMPILED is the committed YAML beside it
    assert module.COMPILED == COMMITTED


@pytest.mark.parametrize("layout, expected", [
    ({"pipelines/katib_hpo.py": ""}, "pipelines/katib_hpo_pipeline.yaml"),  # a checkout: the committed file
    ({}, "katib_hpo_pipeline.yaml"),  # anywhere else: a file in the working folder
    ({"pipelines/other.py": ""}, "katib_hpo_pipeline.yaml"),  # a pipelines/ folder of someone else's
])
def test_default_output_is_the_committed_file_only_in_a_checkout(tmp_path, layout, expected):
    for name, text in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert dag.default_output(tmp_path) == tmp_path / expected


def test_compile_outside_a_checkout_writes_the_committed_yaml_in_the_working_folder(tmp_path):
    # an installed hpo, run in a folder that is no checkout, compiles the same pipeline the repository commits
    done = subprocess.run([sys.executable, "-m", "hpo_lib.cli", "pipeline", "compile"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "compiled to katib_hpo_pipeline.yaml"
    assert (tmp_path / "katib_hpo_pipeline.yaml").read_text() == COMMITTED.read_text()


def test_compile_to_a_folder_is_one_line(tmp_path, capsys):
    # the output must be a file path: a folder is refused in one line, exit code 2
    assert cli.main(["pipeline", "compile", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"hpo: error: cannot write the compiled pipeline to {tmp_path}: it is a folder; give a .yaml file " \
                  "path\n"


def test_a_local_run_leaves_print_as_it_found_it(tmp_path, monkeypatch):
    # kfp's local runner swaps builtins.print per step and runs a ParallelFor's retrains on threads, so its swaps can
    # end out of order and leave print indenting; the run puts print back whatever kfp left
    import builtins
    from types import SimpleNamespace

    from hpo_lib.pipeline import local

    def leaky_kfp(**_):
        inner = builtins.print
        builtins.print = lambda *args, **kwargs: inner("    ", *args, **kwargs)
        return SimpleNamespace(outputs={name: SimpleNamespace(path=str(tmp_path / name)) for name in local.OUTPUTS})

    monkeypatch.setattr(dag, "run_local", leaky_kfp)
    before = builtins.print
    outputs = local.run({"tracking_uri": "file:/nowhere", "mlflow_experiment": ""}, pipeline_root=tmp_path,
                        on_progress=lambda progress: None)
    assert builtins.print is before
    assert set(outputs) == set(local.OUTPUTS)
