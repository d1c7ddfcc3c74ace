"""Every default is stated twice, in a schema dataclass and in its YAML; the two agree value for value.

The oracle is the YAML file read alone (``OmegaConf.load``, interpolations unresolved), never
composed through Hydra (which would merge the two and hide a difference): for every group option
whose YAML composes its own schema (``configs/<group>/<name>.yaml`` with
``defaults: [/schema/<group>/<name>@_here_]``; a variant such as ``adamw`` that composes another
option's schema sets its own values on purpose), every intervention and logger YAML
(``# @package intervention.<name>``) and ``configs/config.yaml`` (against ``config.Config``, the
probe and every diagnostic included), each key the YAML sets must equal the schema's default. A key
the YAML leaves out takes the schema's default: one source, nothing to compare. Parts added later
are picked up from the registry and the config directory.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from plasticity_runner import config, registry

CONFIGS = Path(config.__file__).resolve().parent.parent / "configs"


def schema_defaults(schema: type) -> dict[str, Any]:
    """Field -> default of a dataclass (a nested dataclass as its own dict; MISSING fields left out)."""
    out = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            value = schema_defaults(type(value))
        elif isinstance(value, enum.Enum):
            value = value.value
        out[f.name] = value
    return out


def differences(node: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: yaml != schema`` for every key the YAML sets to a value other than the schema's default."""
    out = []
    for key, value in node.items():
        if key == "defaults" or key not in defaults:
            continue  # the defaults list; a key of a group the schema holds as Any (checked by its own YAML)
        want = defaults[key]
        if isinstance(value, dict) and isinstance(want, dict):
            out += differences(value, want, f"{prefix}{key}.")
        elif isinstance(want, (list, tuple)) and isinstance(value, list):
            if list(want) != value:
                out.append(f"{prefix}{key}: yaml {value!r} != schema {want!r}")
        elif value != want or isinstance(value, bool) != isinstance(want, bool):
            out.append(f"{prefix}{key}: yaml {value!r} != schema {want!r}")
    return out


def read(path: Path) -> dict[str, Any]:
    """A YAML file as OmegaConf reads it (``1.0e5`` a float), interpolations left as text."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def direct_schema(path: Path) -> tuple[str, str] | None:
    """(group, option) of the schema a YAML composes itself (``/schema/<group>/<name>@_here_``)."""
    node = read(path)
    for entry in node.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/schema/"):
            _, _, group, rest = entry.split("/", 3)
            return group, rest.split("@")[0]
    return None


def _cases() -> list[tuple[str, Path, type]]:
    cases = []
    for group, options in config.schemas().items():
        for path in sorted((CONFIGS / group).glob("*.yaml")):
            found = direct_schema(path)
            if found is not None and found[1] == path.stem:
                cases.append((f"{group}/{path.stem}", path, options[found[1]]))
    for name, part in registry.parts("intervention").items():
        cases.append((f"intervention/{name}", CONFIGS / "intervention" / f"{name}.yaml", part.schema))
    for name, schema in (("tensorboard", config.TensorBoardConfig), ("wandb", config.WandbConfig)):
        cases.append((f"logger/{name}", CONFIGS / "logger" / f"{name}.yaml", schema))
    cases.append(("config.yaml", CONFIGS / "config.yaml", config.Config))
    return cases


CASES = _cases()


def test_every_registered_part_with_a_yaml_is_compared():
    names = {name for name, _, _ in CASES}
    assert {f"intervention/{n}" for n in registry.parts("intervention")} <= names
    assert {"agent/dqn", "optimizer/adam", "config.yaml", "intervention/redo"} <= names
    assert {f"architecture/{n}" for n in registry.parts("architecture")} <= names
    assert {f"env/{n}" for n in registry.parts("env")} <= names


@pytest.mark.parametrize("name,path,schema", CASES, ids=[c[0] for c in CASES])
def test_the_yaml_states_the_schema_defaults(name, path, schema):
    assert path.exists(), f"{schema.__name__} has no {path.relative_to(CONFIGS.parent)}"
    node = read(path)
    assert differences(node, schema_defaults(schema)) == [], f"{path.relative_to(CONFIGS.parent)} vs {schema.__name__}"


def test_the_comparison_sees_a_difference():
    """The oracle: a hand-made schema and YAML nodes, one differing in a nested key, one in type."""

    @dataclasses.dataclass
    class Inner:
        tau: float = 0.1

    @dataclasses.dataclass
    class Outer:
        flag: bool = False
        steps: int = 1
        inner: Inner = dataclasses.field(default_factory=Inner)
        sizes: list = dataclasses.field(default_factory=lambda: [1, 2])

    d = schema_defaults(Outer)
    assert d == {"flag": False, "steps": 1, "inner": {"tau": 0.1}, "sizes": [1, 2]}
    assert differences({"flag": False, "steps": 1, "inner": {"tau": 0.1}, "sizes": [1, 2]}, d) == []
    assert differences({"inner": {"tau": 0.2}}, d) == ["inner.tau: yaml 0.2 != schema 0.1"]
    assert differences({"steps": True}, d) == ["steps: yaml True != schema 1"]  # a bool is no int here
    assert differences({"sizes": [1, 3]}, d) == ["sizes: yaml [1, 3] != schema [1, 2]"]
