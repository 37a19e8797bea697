"""The documentation site: `mkdocs build --strict` passes, the generated reference pages follow the code, every
`hpo` command of the pages parses with the real parser, the tutorials' cheap commands and Python examples run as
written, and the home page loads with its navigation in headless Chromium.

The site is built once per run (a few seconds); the hook that generates pages is loaded from its file.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from filelock import FileLock
from mkdocs.exceptions import PluginError

from hpo_lib import metrics
from hpo_lib.cli import _build_parser
from hpo_lib.trial import flags

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HPO = Path(sys.executable).parent / "hpo"
# a tutorial command is run when it only reads: these flags and subcommands never train, write or serve
CHEAP = ("--help", "--version", "--check-flags", "manifests validate")
SHELL_END = {"|", "||", "&&", ";", ">", ">>", "&"}


def load_hook():
    spec = importlib.util.spec_from_file_location("docs_site_hook", DOCS / "_hooks" / "pages.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nav_pages(section: str | None = None) -> list[str]:
    """The Markdown files of mkdocs.yml's nav (of one top-level section), generated pages left out."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def walk(items) -> Iterator[str]:
        for item in items:
            for value in item.values() if isinstance(item, dict) else [item]:
                yield from walk(value) if isinstance(value, list) else [value]

    chosen = [v for item in nav for k, v in item.items() if section in (None, k)]
    return [p for p in walk(chosen) if (DOCS / p).is_file()]


def fenced(page: str, language: str) -> list[str]:
    """The code blocks of one language in a page, continuation lines joined."""
    text = (DOCS / page).read_text()
    return [block.replace("\\\n", " ") for block in re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)]


def hpo_commands(page: str) -> list[list[str]]:
    """Each `hpo ...` command line of a page's shell blocks, as its arguments after `hpo` (comments, pipes and
    redirections cut off)."""
    found = []
    for block in fenced(page, "bash"):
        for line in block.splitlines():
            if not re.match(r"\s*(\S*/)?hpo\s", line):
                continue  # not an `hpo` command (and perhaps not shlex-able: kubectl's jsonpath, prose)
            words = shlex.split(line, comments=True)
            args = []
            for word in words[1:]:
                if word in SHELL_END:
                    break
                args.append(word)
            found.append(args)
    return found


@pytest.fixture(scope="session")
def site(tmp_path_factory, worker_id) -> Path:
    """The site, built once per run: xdist workers share the base temporary folder's parent and a lock."""
    shared = tmp_path_factory.getbasetemp()
    shared = shared if worker_id == "master" else shared.parent
    out = shared / "docs-site"
    with FileLock(str(out) + ".lock"):
        if not out.is_dir():
            partial = shared / "docs-site.partial"  # a strict build that fails still writes its pages
            env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
            done = subprocess.run(
                [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(partial)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            # --strict: a broken link or anchor, a missing include, an unreadable docstring fails the build
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            partial.rename(out)
    return out


def page_text(site: Path, uri: str) -> str:
    return (
        (site / uri.removesuffix(".md") / "index.html").read_text()
        if uri != "index.md"
        else (site / "index.html").read_text()
    )


def test_every_nav_page_is_built(site):
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    # the five sections the site promises, in order, after the home page
    assert [next(iter(item)) for item in nav] == ["Home", "Tutorials", "How-to", "Reference", "Explanations", "Results"]
    hook = load_hook()
    for page in [*nav_pages(), "reference/cli.md", "reference/metrics.md", "reference/manifests.md"]:
        html = page_text(site, page)
        # each page was built, and every include/generate directive was replaced
        assert not hook.INCLUDE.search(html) and not hook.GENERATE.search(html), page


def test_cli_reference_is_the_parser(site):
    html = page_text(site, "reference/cli.md")
    hook = load_hook()
    for line, parser in hook.commands(_build_parser()):
        # every command has its section, and every flag of it is on the page
        assert f"<code>{line}</code>" in html, line
        for action in parser._actions:
            for option in action.option_strings:
                assert option in html, (line, option)
    for field in dataclasses.fields(flags.TrialArgs):
        # the trial's Katib-style flags too
        assert "--" + field.name.replace("_", "-") in html, field.name


def test_metrics_reference_names_every_metric(site):
    html = page_text(site, "reference/metrics.md")
    names = set().union(*(metrics.epoch_metrics(t, robust=True) for t in metrics.SCORES), metrics.FINAL)
    # every name a trial can print, and the objective marked as such
    assert all(f"<code>{name}</code>" in html for name in names), sorted(n for n in names if n not in html)
    row = re.search(rf"<tr>\s*<td><code>{metrics.OBJECTIVE}</code></td>(.*?)</tr>", html, re.S)
    assert row and "the objective" in row[1]


def test_manifests_reference_shows_every_experiment_and_parameter(site):
    html = page_text(site, "reference/manifests.md")
    for path in sorted((ROOT / "manifests").glob("*-experiment.yaml")):
        experiment = next(d for d in yaml.safe_load_all(path.read_text()) if d.get("kind") == "Experiment")
        # the experiment's name and each searched parameter, read from the file
        assert f"<code>{experiment['metadata']['name']}</code>" in html, path.name
        for parameter in experiment["spec"]["parameters"]:
            assert f"<code>{parameter['name']}</code>" in html, (path.name, parameter["name"])


def test_api_reference_documents_the_public_calls(site):
    html = page_text(site, "reference/api.md")
    # mkdocstrings rendered each call of the Python API and the error it raises
    for name in ("tune", "load_results", "run_trial", "run_pipeline", "TuneResult"):
        assert f'id="hpo_lib.api.{name}"' in html, name
    assert 'id="hpo_lib.errors.ConfigError"' in html


def test_explanations_quote_concepts_md(site):
    concepts = (DOCS / "concepts.md").read_text()
    leakage = page_text(site, "explanations/leakage.md")
    # the leakage page carries the purge-gap rule from concepts.md, not a copy typed into the page
    assert "purge gap" in concepts and "purge gap" in leakage
    assert "purge gap" not in (DOCS / "explanations" / "leakage.md").read_text()


def test_an_include_of_a_missing_heading_names_the_headings_there():
    hook = load_hook()
    with pytest.raises(PluginError, match=r"no heading that starts so: its headings are .*\'Data\'"):
        hook.section("# Top\n\n### Data\ntext\n", "Leakage", where="a.md includes b.md")


def test_an_included_section_keeps_its_links_and_ends_at_the_next_heading():
    hook = load_hook()
    text = "# T\n## A\nsee [k](kubeflow.md#x)\n```bash\n# not a heading\n```\n### A.1\nmore\n## B\nno\n"
    body = hook.section(text, "A", where="w")
    # the section stops at B, its subheading moves up to level 2, and a heading-like line in a fence stays
    assert "no" not in body.splitlines() and "## A.1" in body and "# not a heading" in body
    # a relative link is re-pointed from the included file's folder to the page's
    assert hook.relink(body, "local.md", "explanations/x.md").startswith("see [k](../kubeflow.md#x)")


@pytest.mark.parametrize("page", [p for p in nav_pages() if hpo_commands(p)])
def test_every_hpo_command_of_the_pages_parses(page):
    parser = _build_parser()
    for args in hpo_commands(page):
        if any(flag in args for flag in ("--help", "--version", "-h")):
            continue  # run by the test below instead
        if args[:1] == ["trial"]:
            # the trial's own parser and range checks, as `hpo trial --check-flags` runs them
            flags.validate(flags.parse_args([a for a in args[1:] if a != flags.CHECK_FLAGS]))
            continue
        try:
            parser.parse_args(args)
        except SystemExit as exc:  # argparse's way to refuse
            pytest.fail(f"{page}: `hpo {' '.join(args)}` does not parse (exit {exc.code})")


@pytest.mark.e2e
def test_the_tutorials_cheap_commands_run_as_written():
    ran = []
    for page in nav_pages("Tutorials"):
        for args in hpo_commands(page):
            line = " ".join(args)
            if not any(word in f" {line} " for word in CHEAP):
                continue
            argv: list[str] = []
            for arg in args:  # the shell's globbing, from the checkout's root
                argv += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(arg)) if "*" in arg else [arg]
            done = subprocess.run([str(HPO), *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
            # each command the tutorials show with a read-only flag exits 0
            assert done.returncode == 0, f"{page}: hpo {line}\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
            ran.append(line)
    # the quick start's own: the version, the help, a trial's flags checked, a manifest validated
    assert any(a.startswith("trial --check-flags") for a in ran) and "--help" in ran, ran


@pytest.mark.e2e
def test_the_quickstart_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = fenced("tutorials/quickstart.md", "python")
    assert blocks  # the quick start shows Python, and it runs here as written (in an empty folder)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "tutorials/quickstart.md", "exec"), {"__name__": "__quickstart__"})
    loss, lines = capsys.readouterr().out.split()[-2:]
    # it trained, printed a finite validation loss and its Katib lines, and wrote its outputs where it said
    assert float(loss) > 0 and int(lines) >= 2
    assert (tmp_path / "local_outputs" / "quickstart-trial" / "metrics.json").is_file()


@pytest.mark.e2e
def test_the_home_page_loads_with_its_navigation_in_chromium(site, tmp_path):
    from tests.e2e.test_browser import browse

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        shot = tmp_path / "home.png"
        dom = browse(f"http://127.0.0.1:{server.server_address[1]}/", screenshot=shot, wait_ms=3000)
    finally:
        server.shutdown()
        server.server_close()
    # Material drew its header tabs: every top-level section of the nav, and the search box its scripts build
    for section in ("Tutorials", "How-to", "Reference", "Explanations", "Results"):
        assert re.search(rf'class="md-tabs__link[^"]*"[^>]*>\s*{section}\s*<', dom), section
    assert "md-search__input" in dom
