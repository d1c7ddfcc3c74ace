"""Tab completion without torch: the schema Hydra completes keys from, as a snapshot.

``plasticity-run --shell-completion install=bash`` installs a hook that runs
``plasticity-run -sc query=bash`` at every TAB. The schema (``config.register_configs``) comes
from the registered parts (networks, interventions, probes), whose modules import torch: 4-5 s per
TAB. For completion, the CLI registers instead this module's snapshot of the same ConfigStore
entries (``completion_schema.json``, their plain values: completion needs the keys and defaults,
not the types), so a TAB imports Hydra and OmegaConf only.

The snapshot is generated from the live schema (``python -m plasticity_runner.completion``);
``tests/test_completion.py`` fails, naming that command, when it is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("completion_schema.json")
FLAGS = ("-sc", "--shell-completion")


def completing(argv: list[str]) -> bool:
    """Whether ``argv`` asks Hydra for shell completion (install, uninstall or a query)."""
    return any(a in FLAGS or a.startswith("--shell-completion=") for a in argv)


def _entries(repo: dict, group: str = ""):
    for key, value in repo.items():
        if isinstance(value, dict):
            yield from _entries(value, f"{group}{key}/")
        else:
            yield group.rstrip("/"), value


def live_schema() -> list[dict[str, Any]]:
    """The package's ConfigStore entries (Hydra's own left out) as plain data, sorted."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from .config import register_configs

    register_configs()
    out = []
    for group, node in _entries(ConfigStore.instance().repo):
        if group.startswith("hydra") or node.provider == "hydra":
            continue
        out.append(
            {
                "group": group or None,
                "name": node.name.removesuffix(".yaml"),
                "package": node.package,
                "node": OmegaConf.to_container(node.node, resolve=False, enum_to_str=True),
            }
        )
    return sorted(out, key=lambda e: (e["group"] or "", e["name"]))


def register_snapshot() -> None:
    """Store the snapshot's entries in Hydra's ConfigStore (what ``register_configs`` stores, untyped)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for e in json.loads(SNAPSHOT.read_text()):
        store.store(
            name=e["name"], node=e["node"], group=e["group"], package=e["package"], provider="plasticity_runner"
        )


def main() -> None:
    SNAPSHOT.write_text(json.dumps(live_schema(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}", file=sys.stderr)


if __name__ == "__main__":
    main()
