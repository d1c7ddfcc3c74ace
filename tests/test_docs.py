"""The documentation cannot drift from the code: the site builds with ``mkdocs build --strict``, every
``plasticity-run`` command shown in README.md and docs/*.md composes (as ``--cfg job`` would) and
passes the range checks, and every Python snippet marked runnable runs on a tiny sweep."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from .conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNERS = (("plasticity-run",), ("python", "-m", "plasticity_runner"), ("python3", "-m", "plasticity_runner"))


# --------------------------------------------------------------------------- the site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``mkdocs build --strict`` in this process (the imports of the generated pages are shared with
    the tests); the generated pages' markdown as the hook made it."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    site_dir = tmp_path_factory.mktemp("site")
    cwd = os.getcwd()
    os.chdir(ROOT)  # mkdocs.yml's paths (docs/hooks.py, paths: [.]) are relative to the repository
    try:
        config = load_config(str(ROOT / "mkdocs.yml"), strict=True, site_dir=str(site_dir))
        build(config)  # strict: any warning (a broken link or anchor, a page outside the nav) aborts
    finally:
        os.chdir(cwd)
    hooks = sys.modules["docs/hooks.py"]
    return site_dir, dict(hooks.GENERATED)


def test_mkdocs_build_strict(site):
    """No broken link or anchor, no page missing from the nav, every generated and API page builds."""
    site_dir, generated = site
    for page in (
        "index.html",
        "tutorial/index.html",
        "reference/configuration/index.html",
        "reference/metrics/index.html",
        "api/run/index.html",
    ):
        assert (site_dir / page).is_file(), page
    assert "load_sweep" in (site_dir / "api/run/index.html").read_text()  # mkdocstrings rendered the API
    assert set(generated) == {"reference/configuration.md", "reference/metrics.md"}


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").rglob("*.md")):
        rel = page.relative_to(ROOT / "docs").as_posix()
        if rel.startswith("gpu/"):
            continue  # the raw GPU records, excluded from the site
        assert f" {rel}" in nav, f"docs/{rel} is not in mkdocs.yml's nav"


# --------------------------------------------------------------------------- the generated reference


def rows_of(page: str) -> dict[str, list[str]]:
    """First cell (without backticks) -> the row's cells (HTML entities read back), for every table row
    of a page."""
    import html

    hooks = sys.modules["docs/hooks.py"]
    out = {}
    for line in page.splitlines():
        if line.startswith("| `"):
            cells = [html.unescape(c) for c in hooks.table_cells(line)]
            out.setdefault(cells[0].strip("`"), cells)
    return out


def test_the_configuration_reference_covers_every_group_option_and_key(site):
    """Oracle: the registry, the schemas and configs/ read here directly."""
    import dataclasses

    from plasticity_runner import config, registry

    page = site[1]["reference/configuration.md"]
    rows = rows_of(page)
    for group in ("env", "architecture", "optimizer", "agent"):
        for path in sorted((ROOT / "configs" / group).glob("*.yaml")):
            assert f"### `{group}={path.stem}`" in page, (group, path.stem)
    for group in ("env", "architecture"):
        for name, part in registry.parts(group).items():
            assert f"### `{group}={name}`" in page, (group, name)
            for f in dataclasses.fields(part.schema):
                assert f"{group}.{f.name}" in rows, (group, name, f.name)
    for name, part in registry.parts("intervention").items():
        assert f"### `{name}`" in page, name
        for f in dataclasses.fields(part.schema):
            assert f"intervention.{name}.{f.name}" in rows, (name, f.name)
    for name, part in registry.parts("diagnostic").items():
        key = part.build().config_key()
        for f in dataclasses.fields(part.schema):
            assert f"{key}.{f.name}" in rows, (name, f.name)
    for f in dataclasses.fields(config.Config):
        if f.name not in (
            "env",
            "architecture",
            "optimizer",
            "agent",
            "intervention",
            "logger",
            "probe",
            "diagnostics",
            "checkpoint",
            "speed",
            "population",
        ):
            assert f.name in rows, f.name
    for path in sorted((ROOT / "configs" / "experiment").glob("*.yaml")):
        assert path.stem in rows, path.stem


def test_the_configuration_reference_reads_defaults_ranges_and_sources(site):
    """Against hand-read values: a default an option file changes (adam_tuned's b2 is 0.9, the
    schema's 0.999), the ranges the checks enforce (config.validate, redo's check), the unit and the
    paper's value of a key's comment."""
    rows = rows_of(site[1]["reference/configuration.md"])
    page = site[1]["reference/configuration.md"]
    tuned = page[page.index("### `optimizer=adam_tuned`") :]
    tuned = tuned[: tuned.index("\n### ")]
    assert "| `optimizer.b2` | float | `0.9` | [0, 1] |" in tuned
    assert rows["total_steps"][3] == ">= 0" and rows["log_every_steps"][3] == "> 0"
    assert rows["intervention.redo.every_steps"][3] == "> 0" and rows["intervention.redo.tau"][3] == ">= 0"
    assert rows["probe.steps"][2] == "`2000`" and rows["probe.steps"][5] == "paper: 2000"
    assert rows["probe.steps"][4].startswith("optimizer steps")
    assert rows["device"][1] == "auto \\| cpu \\| cuda"


def test_the_metrics_reference_covers_every_declared_metric(site):
    """Oracle: the producers' declarations read here (as tests/test_metric_names.py reads them);
    each has a row with a definition from the docs."""
    from plasticity_runner import evaluation, registry
    from plasticity_runner.case_studies import brownian, memorization
    from plasticity_runner.probes import dynamics

    page = site[1]["reference/metrics.md"]
    declared = []
    for part in registry.parts("diagnostic").values():
        d = part.build()
        declared += [(d.phase, s) for s in d.scalars]
        declared += [("array", a) for a in d.arrays]
    declared += [(dynamics.LOG_POINT_PHASE, s) for s in dynamics.LOG_POINT_SCALARS]
    declared += [(evaluation.PHASE, s) for s in evaluation.SCALARS] + [
        (memorization.PHASE, s) for s in memorization.SCALARS
    ]
    declared += [(p, s) for p in brownian.PROCESSES for s in brownian.SCALARS]
    declared += [("array", f"{p}/{a}") for p in brownian.PROCESSES for a in brownian.ARRAYS]
    assert len(declared) > 60
    lines = page.splitlines()
    for phase, name in declared:
        if phase == "array":
            row = [line for line in lines if line.startswith(f"| `{name}` |")]
        else:
            row = [line for line in lines if line.startswith(f"| `{phase}` | `{name}` |")]
        assert row, (phase, name)
        assert "no definition" not in row[0], (
            f"{phase}/{name} has no definition in docs/metrics.md (or the case-study / Atari pages)"
        )
    assert "**no definition in the docs**" not in page


def test_a_metric_without_a_definition_is_flagged(site, monkeypatch):
    """The check can fail: a declared name that no docs table defines is marked."""
    from plasticity_runner.probes import statistics

    hooks = sys.modules["docs/hooks.py"]
    monkeypatch.setattr(statistics.Statistics, "scalars", (*statistics.Statistics.scalars, "no_such_metric"))
    assert "| `stats` | `no_such_metric` | **no definition in the docs**" in hooks.metrics_page()


# --------------------------------------------------------------------------- the commands


def code_spans(text: str) -> list[str]:
    """Shell lines of the fenced blocks (continuations joined) and the inline code spans."""
    out = []
    blocks = re.findall(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", text, re.S | re.M)
    for block in blocks:
        out += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^[ \t]*```[^\n]*\n.*?^[ \t]*```", "", text, flags=re.S | re.M)
    out += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    return out


def commands(text: str) -> list[list[str]]:
    """Every ``plasticity-run`` / ``python -m plasticity_runner`` command: its arguments."""
    found = []
    for line in code_spans(text):
        if "plasticity-run" not in line and "plasticity_runner" not in line:
            continue
        if "<" in line or "..." in line or "eval " in line:  # placeholders (<dir>, <TAB>, ...), completion set-up
            continue
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lex.whitespace_split = True
            lex.commenters = "#"
            tokens = list(lex)
        except ValueError:  # unbalanced quotes: prose, not a command
            continue
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token in (";", "&&", "||", "|", "&"):
                for runner in RUNNERS:
                    if tuple(command[: len(runner)]) == runner:
                        found.append(command[len(runner) :])
                command = []
            else:
                command.append(token)
    return found


def doc_commands() -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        for args in commands(page.read_text()):
            out.append((f"{page.relative_to(ROOT)}: {' '.join(args) or '(no arguments)'}", args))
    return out


DOC_COMMANDS = doc_commands()


def test_the_commands_are_found():
    """The extraction sees the commands the pages are known to show (a guard on the parser)."""
    shown = {label.split(": ", 1)[1] for label, _ in DOC_COMMANDS}
    assert "(no arguments)" in shown  # README: pip install -e . && plasticity-run
    assert "-m seed=0,1,2 env.task=true_label,random_label" in shown
    assert any("hydra/launcher=slurm" in s for s in shown)
    assert any(s.startswith("-m hydra/sweeper=optuna") for s in shown)  # an inline span over two lines
    assert len(DOC_COMMANDS) > 40


GROUPS = {p.name for p in (ROOT / "configs").iterdir() if p.is_dir()}


def is_group(key: str) -> bool:
    """A config group's choice (``optimizer=sgd``, ``+intervention=redo``, ``hydra/launcher=slurm``)."""
    key = key.lstrip("+~")
    return "/" in key or key in GROUPS


def variants(overrides: list[str]):
    """The command's override sets: every sweep at its first value, then each further value of each
    sweep with the others at their first. Each as (group overrides, scalar overrides); a key swept
    over a range Hydra cannot list (``interval(...)``, which the Optuna sweeper samples) is yielded
    as a scalar override to ``None`` that only has to exist."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first, others = [], []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        if not o.is_sweep_override():
            first.append((key, o.get_value_element_as_str(), o))
        elif not o.is_discrete_sweep():
            first.append((key, None, None))
        else:
            strings = list(o.sweep_string_iterator())
            first.append((key, strings[0], o))
            others += [(key, s) for s in strings[1:]]
    yield first
    for key, s in others:
        yield [(k, s if k == key else v, o) for k, v, o in first]


def scalar_value(key: str, string: str):
    """The value Hydra gives ``key=string`` (numbers, null, lists, quoted strings parsed)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"{key.lstrip('+~')}={string}").value()


def compose_failures(doc_commands: list[tuple[str, list[str]]]) -> list[str]:
    """Each command composes as ``plasticity-run --cfg job`` would, Hydra's own keys included, and
    passes the range checks of a run's start; a sweep composes at every one of its values.

    The group choices are composed by Hydra (once per distinct set); the other overrides are then set
    on the composed config, whose typed schema checks each value as Hydra's merge would."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra

    from plasticity_runner.cli import config_dir, inactive_intervention_error
    from plasticity_runner.config import validate

    failures, cache = [], {}
    commands = []
    for label, argv in doc_commands:
        args, unknown = get_args_parser().parse_known_args(argv)
        if not (args.shell_completion or args.hydra_help or unknown):
            # the CLI's own check before Hydra (it composes when an intervention option is set)
            problem = inactive_intervention_error(argv)
            if problem is None:
                commands.append((label, args))
            else:
                failures.append(f"{label}\n    {problem}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for label, args in commands:
            try:
                for variant in variants(args.overrides):
                    groups = tuple(f"{k}={v}" for k, v, _ in variant if is_group(k))
                    if groups not in cache:
                        cache[groups] = compose(config_name="config", overrides=list(groups), return_hydra_config=True)
                    cfg = cache[groups].copy()
                    for key, string, _ in variant:
                        if is_group(key):
                            continue
                        path = key.lstrip("+~")
                        if string is None or key.startswith("~"):  # a range the sweeper samples; a deletion
                            assert OmegaConf.select(cfg, path, default="<missing>") != "<missing>", f"no key {path}"
                            continue
                        if key.startswith("+"):  # a new key: not under a schema (the CLI's override_check)
                            assert OmegaConf.select(cfg, path, default="<missing>") == "<missing>", (
                                f"{path} exists: drop the +"
                            )
                            parent = OmegaConf.select(cfg, path.rpartition(".")[0]) if "." in path else cfg
                            assert path.startswith("hydra.") or not dataclasses.is_dataclass(
                                OmegaConf.get_type(parent)
                            ), f"{path}: the schema has no such key"
                            with open_dict(cfg):
                                OmegaConf.update(cfg, path, scalar_value(key, string), merge=True)
                        else:
                            assert OmegaConf.select(cfg, path, default="<missing>") != "<missing>", f"no key {path}"
                            OmegaConf.update(cfg, path, scalar_value(key, string), merge=True)
                    with open_dict(cfg):
                        del cfg["hydra"]
                    validate(cfg)
            except Exception as exc:  # every failure is reported with its command
                failures.append(f"{label}\n    {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    GlobalHydra.instance().clear()
    return failures


def test_every_command_in_the_docs_composes():
    failures = compose_failures(DOC_COMMANDS)
    assert not failures, "commands in the docs that do not compose:\n" + "\n".join(failures)


def test_a_broken_command_is_caught():
    """The check can fail: a typo, a key added under a schema, an unknown option, a value out of
    range, a sweep value of the wrong type, an option of an inactive intervention."""
    broken = [
        ["total_step=3"],
        ["+total_step=3"],
        ["optimizer=nosuch"],
        ["total_steps=-1"],
        ["-m", "seed=0,x"],
        ["intervention.redo.tau=0.2"],
    ]
    failures = compose_failures([(" ".join(b), b) for b in broken] + [("fine", ["seed=1"])])
    assert len(failures) == len(broken), failures


# --------------------------------------------------------------------------- the snippets


def runnable_snippets() -> list[tuple[str, str, str]]:
    """(label, run directory the snippet reads, code) of each ```python block marked
    ``<!-- runnable: <run directory> -->`` on the line before it."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"<!-- runnable: (\S+) -->\n```python\n(.*?)```", text, re.S):
            line = text[: m.start()].count("\n") + 1
            out.append((f"{page.relative_to(ROOT)}:{line}", m.group(1), m.group(2)))
    return out


SNIPPETS = runnable_snippets()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A sweep of two tiny runs (seeds 0 and 1) as a multirun directory holds them."""
    from plasticity_runner.trainer import train

    sweep = tmp_path_factory.mktemp("sweep")
    for seed in (0, 1):
        train(
            make_cfg(
                [
                    f"seed={seed}",
                    "total_steps=20",
                    "probe.every_steps=10",
                    "log_every_steps=10",
                    "diagnostics.curvature.enabled=false",
                    "diagnostics.gradcov.enabled=false",
                ]
            ),
            sweep / str(seed),
        )
    return sweep


def test_snippets_are_marked():
    assert any(path.startswith("docs/tutorial.md") for path, _, _ in SNIPPETS)
    assert any(path.startswith("README.md") for path, _, _ in SNIPPETS)


@pytest.mark.parametrize("label, run_dir, code", SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_runnable_snippet_runs_on_a_tiny_sweep(tiny_sweep, tmp_path, monkeypatch, label, run_dir, code):
    target = tmp_path / run_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(tiny_sweep, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, label, "exec"), {"__name__": "__doc_snippet__"})


# --------------------------------------------------------------------------- the set-up commands


def test_the_readme_test_command_is_what_ci_runs():
    """README's "install and run the tests" names the extras `.ci/run` installs, and each exists."""

    def extras(text: str) -> list[str]:
        found = re.findall(r'pip install[^\n]*-e "\.\[([a-z0-9_,-]+)\]"', text)
        assert found, "no pip install -e .[...] line"
        return sorted(found[0].split(","))

    readme = extras((ROOT / "README.md").read_text())
    assert readme == extras((ROOT / ".ci" / "run").read_text())
    assert readme == extras((ROOT / "docs" / "index.md").read_text())
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    declared = re.findall(r"^([a-z0-9_-]+) = \[", section, re.M)
    assert set(readme) <= set(declared), set(readme) - set(declared)
    assert {"test", "docs"} <= set(readme)


@pytest.mark.parametrize("module", ["plasticity_runner.report.cli", "plasticity_runner.cli"])
def test_the_commands_of_the_docs_start_in_a_fresh_process(module):
    """``plasticity-report`` and ``plasticity-run`` import their entry modules first, in a process of
    their own: an import cycle that in-process tests hide (the modules already loaded) stops them."""
    import subprocess

    res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
