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
