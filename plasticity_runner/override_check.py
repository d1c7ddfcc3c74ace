"""Command-line overrides the schema does not know, refused before Hydra runs.

Hydra answers ``total_step=300`` with "To append to your config use +total_step=300", and
``+total_step=300`` then adds the key: a full default run starts with the typo sitting unused in
``run.json``. ``unknown_override_error`` refuses such a key, with or without ``+``, and names the
nearest known key (``difflib``); an option of a config group that does not exist, alone or inside
a list (``intervention=[layer_nrom]``), gets the group's options and the nearest one.

A key is unknown when its parent in the composed config is a schema dataclass (``config.py``)
that lacks it; keys under free-form dictionaries and ``hydra.*`` are left to Hydra.
"""

from __future__ import annotations

import difflib
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _nearest(word: str, options: list[str]) -> str | None:
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


def _option_values(override: Any) -> list[str]:
    """The option names an override of a config group selects (lists and sweeps flattened)."""
    if override.is_sweep_override():
        values = list(override.sweep_string_iterator())
    else:
        values = [override.value()]
    out = []
    for v in values:
        if isinstance(v, str) and v.startswith("[") and v.endswith("]"):
            out += [x.strip() for x in v[1:-1].split(",") if x.strip()]
        elif isinstance(v, (list, tuple)):
            out += [str(x) for x in v]
        elif v is not None:
            out.append(str(v))
    return out


def _group_problem(group: str, options: list[str], override: Any) -> str | None:
    for value in _option_values(override):
        if value in options or value == "null":
            continue
        near = _nearest(value, options)
        hint = f" (did you mean `{near}`?)" if near else ""
        return f"config group '{group}' has no option '{value}'{hint}; its options: {', '.join(sorted(options))}"
    return None


def _key_problem(cfg: DictConfig, key: str) -> str | None:
    """Why ``key`` is not a key of ``cfg``'s schema (None: it is, or it is not ours to judge)."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return None  # below a leaf or an inactive (None) part: Hydra or hydra_glue says what is wrong
        schema = OmegaConf.get_type(node)
        if part not in node:
            if schema is None or schema is dict:
                return None  # a free-form dictionary takes any key
            known = [str(k) for k in node.keys()]
            near = _nearest(part, known)
            where = ".".join(parts[:i])
            full = f"{where}.{near}" if where and near else near
            hint = f" (did you mean `{full}`?)" if near else ""
            return (
                f"config key '{key}' is not in the config{hint}; a `+` does not add keys the schema does not "
                "know (`plasticity-run --cfg job` prints every key)"
            )
        node = node[part] if not OmegaConf.is_missing(node, part) else None
    return None


def unknown_override_error(argv: list[str], config_dir: str) -> str | None:
    """The error for the first override of ``argv`` naming an unknown key or group option, or None.

    Composes the primary config (in ``config_dir``) with the overrides of config groups (a sweep
    at its first value); anything it cannot parse or compose is left to Hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
        if args.config_name or args.config_path or args.config_dir or args.shell_completion:
            return None
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except (SystemExit, Exception):
        return None
    mine = [
        o
        for o in overrides
        if not o.key_or_group.lstrip("+~").startswith("hydra")
        and not o.is_delete()
        and "@" not in o.key_or_group
        and o.package is None
    ]
    if not mine:
        return None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            groups = {g for g in loader.list_groups("") if g not in ("hydra", "schema")}
            group_overrides = [o for o in mine if o.key_or_group.lstrip("+") in groups]
            for o in group_overrides:
                group = o.key_or_group.lstrip("+")
                problem = _group_problem(group, list(loader.get_group_options(group)), o)
                if problem:
                    return problem
            first = []
            for o in group_overrides:
                if o.is_sweep_override():
                    value = next(iter(o.sweep_string_iterator()), None)
                    if value is None:
                        return None
                    first.append(f"{o.get_key_element()}={value}")
                else:
                    first.append(o.input_line)
            cfg = compose(config_name="config", overrides=first)
    except Exception:
        return None
    finally:
        GlobalHydra.instance().clear()
    for o in mine:
        key = o.key_or_group.lstrip("+")
        if key in groups or key.split(".")[0] in ("hydra",):
            continue
        problem = _key_problem(cfg, key)
        if problem:
            return problem
    return None
