"""The ``hpo`` command on local studies: tune, results, report and dashboard, and its one-line errors."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import urllib.request

import pytest

from hpo_lib import cli, engine
from tests.conftest import free_port, manifest, multi_manifest, options


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A finished local study of four trials (levels 1, 3, 5, 2; the level-5 one early-stopped): (manifest, state)."""
    folder = tmp_path_factory.mktemp("tuned")
    path = manifest(folder, maxTrialCount=4)
    engine.run(path, options(folder, curves="1,3,5,2"))
    return path, folder / "state"


# ------------------------------------------------------------------------------------------------ tune
def test_tune_command_prints_a_leaderboard(tmp_path, capsys):
    code = cli.main(["tune", str(manifest(tmp_path)), "--set", "curves=1,3,5", "--state-dir", str(tmp_path / "s"),
                     "--no-progress", "--no-tracking"])
    out = capsys.readouterr().out
    # the study ran and its leaderboard and export are printed
    assert code == 0 and "2 succeeded, 1 early-stopped, 0 failed" in out and "#1 trial 0: objective 1" in out
    assert f"trials exported to {tmp_path / 's' / 'local.scripted'}/trials.json" in out


def test_tune_of_a_missing_manifest_is_one_clear_error(tmp_path, capsys):
    # a manifest that is not there: exit 2 and one error line
    assert cli.main(["tune", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[0].startswith("hpo: error: ")


def test_an_engine_error_that_names_settings_ends_with_the_flags_that_fix_it(tmp_path, capsys):
    code = cli.main(["tune", str(multi_manifest(tmp_path)), "--pruner", "hyperband", "--state-dir",
                     str(tmp_path / "s"), "--no-progress", "--no-tracking"])
    err = capsys.readouterr().err.strip().splitlines()
    # exit 2, one line on stderr: the engine's reason, then the setting as this command's flag
    assert code == 2 and len(err) == 1
    assert err[0].startswith("hpo: error: pruner hyperband: Optuna cannot prune multi-objective studies")
    assert err[0].endswith("; set with --pruner")


# ------------------------------------------------------------------------------------------------ results, report
def test_results_prints_the_top_k_and_exports_every_trial(tuned, tmp_path, capsys):
    path, state = tuned
    assert cli.main(["results", str(path), "--state-dir", str(state), "--output", str(tmp_path / "out"),
                     "--top", "2"]) == 0
    out = capsys.readouterr().out
    # the top 2 of the three succeeded trials, and the epochs early stopping saved
    assert "top 2 by the objective" in out and "#3" not in out and "early stopping saved 2 epochs (" in out
    # every trial exported where --output says, in Katib Trial shape
    records = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert [r["condition"] for r in records] == ["Succeeded", "Succeeded", "EarlyStopped", "Succeeded"]


def test_results_refuses_a_top_below_one(tuned, capsys):
    path, state = tuned
    # exit 2 with the flag and the value
    assert cli.main(["results", str(path), "--state-dir", str(state), "--top", "0"]) == 2
    assert "--top must be at least 1, got 0" in capsys.readouterr().err


def test_report_writes_the_plots_and_the_page(tuned, capsys):
    path, state = tuned
    assert cli.main(["report", str(path), "--state-dir", str(state)]) == 0
    written = capsys.readouterr().out.split()
    # one line per file written: the plots and the page, none empty
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert {"history.png", "learning_curves.png", "slice.png", "report.html"} <= names  # 3 trials: no importances
    assert all(os.path.getsize(p) > 1000 for p in written)
    # the page sits in the study's folder by default, titled with the study
    assert "<h1>local.scripted</h1>" in (state / "local.scripted" / "report" / "report.html").read_text()


@pytest.mark.parametrize("command", ["results", "report"])
def test_results_and_report_without_a_study_are_one_clear_error(tmp_path, capsys, command):
    # no study stored: exit 2, telling the user to tune first
    assert cli.main([command, str(manifest(tmp_path)), "--state-dir", str(tmp_path / "none")]) == 2
    assert "run `hpo tune" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ dashboard
def test_dashboard_without_studies_is_one_clear_error(tmp_path, capsys):
    # nothing tuned in the state folder: exit 2 before any server starts
    assert cli.main(["dashboard", "--state-dir", str(tmp_path / "none"), "--port", str(free_port())]) == 2
    assert "no studies under" in capsys.readouterr().err


def test_dashboard_serves_the_local_studies_once_it_prints_its_url(tuned):
    _, state = tuned
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hpo_lib.cli", "dashboard", "--state-dir", str(state),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline() if ready else "(no line within 120 s)"
        # the URL line comes once the server answers: the first request after it is served, no retry
        assert line.startswith(f"optuna-dashboard on http://127.0.0.1:{port}/ for sqlite:///"), line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as response:
            body = json.loads(response.read())
        # the dashboard's API lists the study `hpo tune` stored
        assert [s["study_name"] for s in body["study_summaries"]] == ["local.scripted"]
    finally:
        process.terminate()
        process.wait(timeout=10)


# ------------------------------------------------------------------------------------------------ typos, usage
@pytest.mark.parametrize("argv, usage, hint", [
    (["tnue", "m.yaml"], "usage: hpo [-h]", "invalid choice: 'tnue'; did you mean 'tune'?"),
    (["pipeline", "run-locl"], "usage: hpo pipeline [-h]", "invalid choice: 'run-locl'; did you mean 'run-local'?"),
    (["tune", "m.yaml", "--max-trail", "3"], "usage: hpo tune [-h]", "hpo tune: error: unrecognized arguments: "
                                                                     "--max-trail 3; did you mean --max-trials?"),
    (["results", "m.yaml", "--stat-dir=s"], "usage: hpo results [-h]", "did you mean --state-dir?"),
    (["tune", "m.yaml", "--pruner", "medianstp"], "usage: hpo tune [-h]", "did you mean 'medianstop'?"),
])
def test_a_typo_gets_the_closest_name_under_its_own_commands_usage(capsys, argv, usage, hint):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    # argparse's exit code, the usage of the command the typo was made in, one error line with the suggestion
    assert exit_.value.code == 2 and err.startswith(usage) and hint in err.splitlines()[-1]


def test_a_typo_close_to_nothing_gets_no_suggestion(capsys):
    with pytest.raises(SystemExit):
        cli.main(["tune", "m.yaml", "--zzzzzz"])
    assert capsys.readouterr().err.splitlines()[-1] == "hpo tune: error: unrecognized arguments: --zzzzzz"


# ------------------------------------------------------------------------------------------------ fast refusals
def test_a_refused_command_imports_nothing_heavy(tmp_path):
    script = ("import sys; from hpo_lib import cli; code = cli.main(sys.argv[1:]); "
              "print(code, sorted(m for m in ('optuna', 'torch', 'sqlalchemy', 'mlflow', 'hpo_lib.katib.lint') "
              "if m in sys.modules))")
    for argv in (["tune", str(tmp_path / "missing.yaml")], ["results", str(tmp_path / "missing.yaml")],
                 ["tune", str(manifest(tmp_path)), "--max-trials", "0"]):
        done = subprocess.run([sys.executable, "-c", script, *argv, "--state-dir", str(tmp_path / "s")],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        # exit 2 and one line, before Optuna, torch, MLflow or the Kubernetes schemas load (seconds on 2 cores)
        assert done.stdout == "2 []\n" and len(done.stderr.splitlines()) == 1, (argv, done.stdout, done.stderr)


def test_optuna_is_quiet_once_a_command_imports_it():
    script = ("from hpo_lib import cli; import sys; cli._quiet_libraries(True); assert 'optuna' not in sys.modules; "
              "import optuna; print(optuna.logging.get_verbosity() == optuna.logging.WARNING)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    # Optuna's INFO lines are off from its first import on, though it was not imported when the CLI asked
    assert done.stdout == "True\n", done.stderr


# ------------------------------------------------------------------------------------------------ completion
@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_the_bash_completion_completes_commands_flags_and_choices():
    script = subprocess.run([sys.executable, "-m", "hpo_lib.cli", "completion", "bash"], capture_output=True,
                            text=True, timeout=60, check=True).stdout

    def complete(*words: str) -> list[str]:
        line = " ".join(("hpo", *words))
        probe = (f"{script}\ncomplete -p hpo\nCOMP_WORDS=(hpo {' '.join(words)}); COMP_CWORD={len(words)}; "
                 f"COMP_LINE='{line}'; COMP_POINT={len(line)}; _shtab_hpo; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
        assert done.stdout.startswith("complete -o bashdefault -F _shtab_hpo hpo\n"), done.stderr
        return sorted(done.stdout.splitlines()[1:])

    # the script defines the function that completes hpo, with every subcommand, their flags and choices
    assert complete("") == sorted(["trial", "data", "tune", "results", "report", "dashboard", "pipeline",
                                   "manifests", "katib", "completion"])
    assert complete("t") == ["trial", "tune"]
    assert complete("tune", "--max") == ["--max-trials"]
    assert complete("tune", "--pruner", "m") == ["manifest", "medianstop"]
    assert complete("pipeline", "") == ["compile", "run-local"]


def test_the_zsh_completion_is_a_compdef_of_every_command(capsys):
    assert cli.main(["completion", "zsh"]) == 0
    out = capsys.readouterr().out
    # zsh loads it from a file named _hpo on its fpath: the first line says which command it completes
    assert out.startswith("#compdef hpo\n") and all(f"    {c}:" in out for c in ("tune", "results", "pipeline"))


# ------------------------------------------------------------------------------------------------ extras
@pytest.mark.parametrize("blocked, argv, extra", [
    ("plotly", ["report", "{manifest}", "--state-dir", "{state}", "--output", "{tmp}/report"], "`hpo report` needs "
     "plotly, which katib-hpo's [local] extra installs: pip install 'katib-hpo[local]'"),
    ("psycopg", ["tune", "{manifest}", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x", "--state-dir",
                 "{tmp}/s", "--no-progress", "--no-tracking"], "`hpo tune` needs psycopg, which katib-hpo's [postgres] "
     "extra installs: pip install 'katib-hpo[postgres]'"),
])
def test_a_command_without_its_extra_names_the_extra_in_one_line(tuned, tmp_path, blocked, argv, extra):
    path, state = tuned
    script = f"import sys; sys.modules[{blocked!r}] = None; from hpo_lib import cli; sys.exit(cli.main(sys.argv[1:]))"
    argv = [a.format(manifest=path, state=state, tmp=tmp_path) for a in argv]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300)
    # no ImportError traceback: exit 2 and one line naming the distribution and the pip command that installs it
    assert done.returncode == 2 and done.stderr.splitlines() == [f"hpo: error: {extra}"], done.stderr


def test_every_optional_library_names_an_extra_that_installs_it():
    import importlib.metadata
    import re
    import tomllib

    from hpo_lib.cli_commands import EXTRA_OF
    from tests.conftest import ROOT

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = importlib.metadata.packages_distributions()
    for module, (package, extra) in EXTRA_OF.items():
        # the extra lists the distribution that provides the module (each is installed in the dev venv)
        wanted = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in extras[extra]}
        assert package in wanted and package in {d.lower() for d in installed[module]}, (module, package, extra)


def test_the_bar_reads_each_running_trials_planned_epochs_from_its_flags():
    from hpo_lib.study_record import planned_epochs

    assert planned_epochs(["python", "-m", "hpo_lib.trial", "--model=lstm", "--epochs=60"]) == 60
    assert planned_epochs(["hpo", "trial", "--epochs", "12", "--lr=0.1"]) == 12
    assert planned_epochs(["hpo", "trial", "--lr=0.1"]) is None  # a command without it shows "?"
    assert planned_epochs(["hpo", "trial", "--epochs=${trialParameters.epochs}"]) is None
