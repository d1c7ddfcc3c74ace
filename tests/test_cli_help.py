"""``plasticity-run --help`` and shell tab completion (``-sc install=bash`` / ``-sc query=bash``),
through the installed command as a user runs them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from .conftest import make_cfg
from .test_cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def groups() -> list[str]:
    return sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "hydra")


def readme_stable_keys() -> list[str]:
    """The keys of the "Stable names that scripts may rely on" sentence of docs/index.md."""
    text = (ROOT / "docs" / "index.md").read_text()
    sentence = text[text.index("Stable names that scripts may rely on") :]
    sentence = sentence[: sentence.index("\n\n")]
    return re.findall(r"`([a-z_.]+)`", sentence)


def test_help_lists_every_group_its_options_and_the_stable_keys(tmp_path):
    res = run_cli(["--help"], cwd=tmp_path, module=False)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert groups() and readme_stable_keys()
    for group in groups():
        assert f"\n{group}: {', '.join(options(group))}\n" in out, group
    for launcher in options("hydra/launcher"):
        assert launcher in out.split("hydra/launcher=")[1].split()[0]
    assert "hydra/sweeper=optuna" in out
    cfg = make_cfg()
    stable = out[out.index("== Stable keys") : out.index("== Config (")]
    for key in readme_stable_keys() + ["objective"]:
        assert re.search(rf"^\s+{re.escape(key)}\s", stable, re.M), key
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
    assert "\ntotal_steps: 5000\n" in out  # the composed config, defaults applied


def test_bash_completion_install_and_query(tmp_path):
    res = run_cli(["-sc", "install=bash"], cwd=tmp_path, module=False)
    assert res.returncode == 0, res.stderr
    script = res.stdout
    assert "complete -o nospace -o default -F hydra_bash_completion plasticity-run" in script
    # the script, sourced in a real bash, completes a group's options
    driver = tmp_path / "complete.sh"
    driver.write_text(
        script
        + """
complete_line() {
    COMP_LINE="$1"; COMP_POINT=${#1}; local words=($1); COMP_CWORD=$(( ${#words[@]} - 1 ))
    [[ "$1" == *" " ]] && COMP_CWORD=${#words[@]}
    COMPREPLY=(); hydra_bash_completion; printf '%s\\n' "${COMPREPLY[@]}"; echo ---
}
complete_line "plasticity-run intervention="
"""
    )
    proc = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(driver)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    interventions, _ = proc.stdout.split("---")
    assert sorted(interventions.split()) == [f"intervention={o}" for o in options("intervention")]


def test_help_prints_the_intervention_order_of_each_hook(tmp_path):
    """``--help`` lists, per hook of a step, the interventions that implement it, in ``ORDER``:
    checked against the classes themselves (which define the hook below ``Intervention``) and
    against two orders fixed by hand (SAM alone replaces the gradient; reset_optimizer is the last
    target-update hook, so the optimizer state ends empty)."""
    from plasticity_runner.interventions import HOOKS, ORDER, REGISTRY, Intervention

    res = run_cli(["--help"], cwd=tmp_path, module=False)
    assert res.returncode == 0, res.stderr
    section = res.stdout[res.stdout.index("== Intervention order") :]
    section = section[: section.index("\n\n")].splitlines()[1:]
    printed = {line.split()[0]: line.split(None, 1)[1].split(" > ") for line in section}
    assert list(printed) == list(HOOKS)
    for hook, names in printed.items():
        own = [
            n
            for n in ORDER
            if any(hook in vars(c) for c in REGISTRY[n].__mro__[: REGISTRY[n].__mro__.index(Intervention)])
        ]
        assert names == (own or ["-"]), hook
        assert names == sorted(names, key=ORDER.index) or names == ["-"]
    assert printed["before_step"] == ["sam"]
    assert printed["on_target_update"][-1] == "reset_optimizer"
