"""The documentation cannot drift from the code: the site builds with ``mkdocs build --strict``, every
``plasticity-run`` command shown in README.md and docs/*.md composes (as ``--cfg job`` would) and
passes the range checks, and every Python snippet marked runnable runs on a tiny sweep."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from .conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNERS = (("plasticity-run",), ("python", "-m", "plasticity_runner"), ("python3", "-m", "plasticity_runner"))


# --------------------------------------------------------------------------- the site


def test_mkdocs_build_strict(tmp_path):
    """No broken link or anchor, no page missing from the nav, every generated page builds."""
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f" {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


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
                        found.append(command[len(runner):])
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


def test_every_command_in_the_docs_composes():
    """Each command composes as ``plasticity-run --cfg job`` would, Hydra's own keys included, and
    passes the range checks of a run's start; a sweep composes at every one of its values.

    The group choices are composed by Hydra (once per distinct set); the other overrides are then set
    on the composed config, whose typed schema checks each value as Hydra's merge would."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from plasticity_runner.cli import config_dir
    from plasticity_runner.config import validate
    from plasticity_runner.hydra_glue import inactive_intervention_error

    failures, cache = [], {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for label, argv in DOC_COMMANDS:
            args, unknown = get_args_parser().parse_known_args(argv)
            if args.shell_completion or args.hydra_help or unknown:
                continue
            try:
                problem = inactive_intervention_error(argv)
                assert problem is None, problem
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
                        if key.startswith("+"):
                            assert OmegaConf.select(cfg, path, default="<missing>") == "<missing>", f"{path} exists: drop the +"
                            with open_dict(cfg):
                                OmegaConf.update(cfg, path, scalar_value(key, string), merge=True)
                        else:
                            assert OmegaConf.select(cfg, path, default="<missing>") != "<missing>", f"no key {path}"
                            OmegaConf.update(cfg, path, scalar_value(key, string), merge=True)
                    with open_dict(cfg):
                        del cfg["hydra"]
                    validate(cfg)
            except Exception as exc:  # noqa: BLE001: every failure is reported with its command
                failures.append(f"{label}\n    {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    GlobalHydra.instance().clear()
    assert not failures, "commands in the docs that do not compose:\n" + "\n".join(failures)


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
    from plasticity_runner.programs import run

    sweep = tmp_path_factory.mktemp("sweep")
    for seed in (0, 1):
        run(make_cfg([f"seed={seed}", "total_steps=20", "probe.every_steps=10", "log_every_steps=10",
                      "diagnostics.curvature.enabled=false", "diagnostics.gradcov.enabled=false"]),
            sweep / str(seed))
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
