"""The package's structure: no import cycle between its modules, no file past 600 lines, and the
program of each env picked in one place (``trainer.train``)."""

from __future__ import annotations

import ast
import importlib
import re
import warnings
from pathlib import Path

import pytest

import plasticity_runner
from plasticity_runner import config, registry

PACKAGE = Path(plasticity_runner.__file__).resolve().parent
# A sign, not a rule: a module past ~400 lines is worth a look, and past MAX_LINES it fails. Do not
# split a module only to pass it: a part that belongs with its one caller stays there.
SIGN_LINES, MAX_LINES = 400, 600


def module_names() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_statements(body: list[ast.AST]):
    """Every import statement of ``body``, at any depth (function bodies included: an import there
    runs when the function does, and a cycle through one is a cycle all the same), except those
    under ``if TYPE_CHECKING:``, which never run."""
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from import_statements(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from import_statements(list(ast.iter_child_nodes(node)))  # except handlers too


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, at import or inside a function (relative imports
    resolved)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in import_statements(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:  # a submodule
                    out.add(f"{base}.{alias.name}")
                elif base in modules:  # a name defined in the module (or package __init__)
                    out.add(base)
    # importing a.b.c first runs a/__init__ and a/b/__init__ (those above ``name`` itself are already
    # being imported when ``name`` runs)
    own = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 2)}
    for target in list(out):
        parts = target.split(".")
        out.update(p for p in (".".join(parts[:k]) for k in range(1, len(parts))) if p in modules and p not in own)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (a list of names, first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_resolves_relative_imports(tmp_path):
    """The oracle: a hand-made graph with one cycle, and the edges of modules read here by hand."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    # a cycle through a package __init__: x imports pkg.sub.mod, and pkg/sub/__init__ imports x
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "x.py").write_text("from .sub.mod import y\n")
    (pkg / "sub" / "__init__.py").write_text("from .. import x\n")
    (pkg / "sub" / "mod.py").write_text("y = 1\n")
    mods = {"pkg.x": pkg / "x.py", "pkg.sub": pkg / "sub" / "__init__.py", "pkg.sub.mod": pkg / "sub" / "mod.py"}
    graph = {n: imports_of(n, path, mods) for n, path in mods.items()}
    assert graph["pkg.x"] == {"pkg.sub.mod", "pkg.sub"}
    assert find_cycle(graph) is not None
    modules = module_names()
    # case_studies/common.py: module-level relative imports, two levels up
    name = "plasticity_runner.case_studies.common"
    common = imports_of(name, modules[name], modules)
    assert {"plasticity_runner.lifecycle", "plasticity_runner.checkpoint", "plasticity_runner.seeding"} <= common
    # trainer.py: ``from . import checkpoint`` is the submodule; a name of envs/__init__ is the package
    trainer = imports_of("plasticity_runner.trainer", modules["plasticity_runner.trainer"], modules)
    assert {"plasticity_runner.checkpoint", "plasticity_runner.envs", "plasticity_runner.envs.schedule"} <= trainer
    # an import inside a function, a method or a nested block counts; one under TYPE_CHECKING does not
    fake = tmp_path / "fake.py"
    fake.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import trainer\n"
        "def f():\n    if True:\n        from . import config\n"
        "try:\n    from . import seeding\nexcept ImportError:\n    from . import errors\n"
        "class C:\n    from .envs import base\n    def m(self):\n        import plasticity_runner.metrics\n"
    )
    expected = {
        "plasticity_runner.seeding",
        "plasticity_runner.envs.base",
        "plasticity_runner.envs",
        "plasticity_runner.config",
        "plasticity_runner.metrics",
        "plasticity_runner.errors",
    }
    assert imports_of("plasticity_runner.fake", fake, modules) == expected


def test_no_import_cycle_between_the_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_case_studies_import_nothing_of_the_trainer():
    """The programs share the lifecycle (``lifecycle``), not each other's insides."""
    graph = import_graph()
    for name, imported in graph.items():
        if name.startswith("plasticity_runner.case_studies"):
            assert "plasticity_runner.trainer" not in imported, name
    assert not any(m.startswith("plasticity_runner.case_studies") for m in graph["plasticity_runner.trainer"])
    assert not any(m.startswith("plasticity_runner.trainer") for m in graph["plasticity_runner.checkpoint"])


def too_long(package: Path, limit: int = MAX_LINES) -> dict[str, int]:
    """Path -> line count of every module of ``package`` longer than ``limit``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        n = len(path.read_text().splitlines())
        if n > limit:
            out[str(path.relative_to(package.parent))] = n
    return out


def test_no_module_is_longer_than_600_lines():
    long = too_long(PACKAGE, SIGN_LINES)
    if long:
        warnings.warn(f"modules past {SIGN_LINES} lines (worth a look, not an error): {long}", stacklevel=1)
    assert too_long(PACKAGE) == {}


def test_the_line_counter_sees_a_long_module(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "pkg" / "short.py").write_text("x = 1\n" * MAX_LINES)
    assert too_long(tmp_path / "pkg") == {"pkg/sub/long.py": MAX_LINES + 1}


# ---------------------------------------------------------------- the program of each env, picked once

ENVS_WITH_A_PROGRAM = sorted(name for name, part in registry.parts("env").items() if part.spec.program is not None)


CONTINUAL = ["permuted_mnist", "shuffled_labels", "slowly_changing_regression", "warm_start"]  # continual/


def test_case_study_envs_are_the_registered_envs_with_a_program():
    assert ENVS_WITH_A_PROGRAM == sorted(["brownian", "memorization", *CONTINUAL])
    assert sorted(config.case_study_envs()) == ["brownian", "memorization"]  # the two case studies of section 4
    assert sorted(config.continual_envs()) == CONTINUAL


@pytest.mark.parametrize("name", ENVS_WITH_A_PROGRAM)
def test_each_program_named_by_an_env_is_a_function_taking_cfg_and_run(name, monkeypatch):
    """The env's program (a function of its env module, which imports the loop's module when it runs:
    that module imports the envs back) calls the case study's or protocol's own ``run_<name>``."""
    import importlib
    import inspect

    function = registry.get("env", name).spec.program
    assert list(inspect.signature(function).parameters) == ["cfg", "run"]
    module = importlib.import_module(
        "plasticity_runner.case_studies." + name
        if name in ("brownian", "memorization")
        else "plasticity_runner.continual.protocols"
    )
    monkeypatch.setattr(module, f"run_{name}", lambda cfg, run: ("ran", cfg, run))
    assert function("cfg", "run") == ("ran", "cfg", "run")


@pytest.mark.parametrize(
    "module",
    [
        "trainer",
        "cli",
        "agents.dqn",
        "case_studies.brownian",
        "case_studies.memorization",
        "continual.protocols",
        "envs",
        "probes",
        "interventions",
        "report.names",
    ],
)
def test_each_entry_module_imports_first_in_a_fresh_process(module):
    """An import cycle through a package that loads its modules at import (``registry.load_modules``)
    is invisible to the static graph; a fresh process importing the module first sees it."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", f"import plasticity_runner.{module}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_train_runs_the_program_its_env_names_and_the_dqn_loop_otherwise(tmp_path, monkeypatch):
    """``trainer.train`` calls the env's program (here a stand-in registered for memorization), and
    ``run_dqn`` for an env without one, each with the opened run of ``run_dir``."""
    import dataclasses

    from plasticity_runner import lifecycle, trainer
    from plasticity_runner.cli import compose_config

    calls = []

    def fake(cfg, run):
        calls.append((cfg.env.name, type(run), run.run_dir))
        return {"fake": True}

    part = registry.get("env", "memorization")
    monkeypatch.setitem(
        registry._PARTS["env"],
        "memorization",
        dataclasses.replace(part, spec=dataclasses.replace(part.spec, program=fake)),
    )
    monkeypatch.setattr(trainer, "run_dqn", fake)
    assert trainer.train(compose_config(["env=memorization"]), tmp_path / "a") == {"fake": True}
    assert trainer.train(compose_config(["env=classification"]), tmp_path / "b") == {"fake": True}
    assert calls == [
        ("memorization", lifecycle.RunDir, tmp_path / "a"),
        ("classification", lifecycle.RunDir, tmp_path / "b"),
    ]


@pytest.mark.parametrize("name", ["brownian", "memorization"])
def test_a_case_study_takes_no_intervention(name):
    from plasticity_runner.cli import compose_config

    with pytest.raises(config.ConfigError, match="intervention.layer_norm"):
        config.validate(compose_config([f"env={name}", "intervention=[layer_norm]"]))


# ---------------------------------------------------------------- a part declares itself once, with a type


def test_a_registration_keyword_its_group_does_not_know_is_an_error():
    with pytest.raises(TypeError, match=r"'episodc'.*EnvSpec declares \['program', 'episodic', 'continual'\]"):
        registry.register("env", "typo_env", object, episodc=True)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'phase'"):
        registry.register("intervention", "no_phase", object)
    assert "typo_env" not in registry.parts("env") and "no_phase" not in registry.parts("intervention")


def test_the_intervention_order_is_one_list(monkeypatch):
    from plasticity_runner.interventions import ORDER, REGISTRY

    assert list(registry.parts("intervention")) == list(REGISTRY) == list(ORDER)

    def fake(*names: str, order: float = 0.0) -> None:
        parts = {n: registry.Part("intervention", n, object, order=order) for n in names}
        monkeypatch.setitem(registry._PARTS, "intervention", parts)

    fake("a", "b")
    registry.set_order("intervention", ("b", "a"))
    assert {n: p.order for n, p in registry._PARTS["intervention"].items()} == {"b": 1.0, "a": 2.0}
    for names, listed, order, problem in [
        (("a", "b"), ("a",), 0.0, r"not listed \(add them\): \['b'\]"),
        (("a",), ("a", "c"), 0.0, r"listed but not registered: \['c'\]"),
        (("a",), ("a",), 5.0, r"registered with order= \(drop it\): \['a'\]"),
        (("a",), ("a", "a"), 0.0, "listed twice"),
    ]:
        fake(*names, order=order)
        with pytest.raises(ValueError, match=problem):
            registry.set_order("intervention", listed)


@pytest.mark.parametrize("group", sorted(registry.PACKAGES))
def test_every_registered_part_holds_its_groups_spec(group):
    for name, part in registry.parts(group).items():
        assert type(part.spec) is registry.SPECS[group], name
        assert all(isinstance(o, str) for o in getattr(part.spec, "test_overrides", ())), name


# ---------------------------------------------------------------- every registered part has its YAML

CONFIGS = PACKAGE.parent / "configs"


def _schema_option(path: Path) -> str | None:
    """The schema a group YAML composes (``/schema/<group>/<name>@_here_``), or the option it
    extends (``defaults: [<other option>]``): the registered part it configures."""
    import yaml

    node = yaml.safe_load(path.read_text()) or {}
    for entry in node.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/schema/"):
            return entry.split("/")[3].split("@")[0]
        if isinstance(entry, str) and entry != "_self_":
            return _schema_option(path.parent / f"{entry}.yaml")
    return None


@pytest.mark.parametrize("group", ["architecture", "env"])
def test_every_registered_part_has_a_yaml_and_every_yaml_a_part(group):
    registered = set(registry.parts(group))
    yamls = {p.stem: _schema_option(p) for p in (CONFIGS / group).glob("*.yaml")}
    assert registered <= set(yamls), f"registered {group} parts without configs/{group}/<name>.yaml"
    unknown = {stem: option for stem, option in yamls.items() if option not in registered}
    assert not unknown, f"configs/{group}/ options whose schema is no registered part: {unknown}"


def test_the_yaml_reader_follows_an_option_that_extends_another():
    assert _schema_option(CONFIGS / "architecture" / "nature_cnn_shared_bias.yaml") == "nature_cnn"


def test_the_readme_draws_a_training_step_through_code_that_exists():
    """Every ``module:function`` (or ``module:[Class.method]``) of README.md's "Code layout" drawing
    names something in ``plasticity_runner``, and each "holds N modules" sentence counts the
    modules it then lists."""
    text = (PACKAGE.parent / "README.md").read_text()
    section = text[text.index("## Code layout") :]
    section = section[: section.index("\n## ", 1)]
    drawing = section[section.index("```\n") + 4 : section.index("\n```", section.index("```\n") + 4)]
    named = re.findall(r"([a-z_]+(?:/[a-z_]+)*):(\[[A-Za-z_.]+\]|[A-Za-z_]+)", drawing)
    assert len(named) >= 15, named
    for module, attr in named:
        obj = importlib.import_module("plasticity_runner." + module.replace("/", "."))
        for part in attr.strip("[]").split("."):
            assert hasattr(obj, part), f"README's layout names {module}:{attr}, which does not exist"
            obj = getattr(obj, part)
    prose = " ".join(section[section.index("\n```\n", section.index("```\n") + 4) :].split())
    counts = re.findall(r"(\d+) modules of the package \(([^;)]*)|pause (\d+) \(([^)]*)\)", prose)
    assert len(counts) == 2, prose
    for n1, chain1, n2, chain2 in counts:
        n, chain = (n1, chain1) if n1 else (n2, chain2)
        modules = re.findall(r"`([a-z_/]+)`", chain)
        assert int(n) == len(modules) and all((PACKAGE / f"{m}.py").is_file() for m in modules), (n, modules)
