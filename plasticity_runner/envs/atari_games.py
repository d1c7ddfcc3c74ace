"""Atari game names (ale-py ROMs) and human-normalised scores (section 6.3).

Games are named as ale-py ROMs in snake_case (``ms_pacman``); ``Pong``, ``MsPacman``,
``MontezumaRevenge`` and ``ALE/Pong-v5`` style names are accepted too. Any ROM ale-py ships can be
played; the 57 benchmark games are the rows of ``atari_scores.csv`` (``ATARI_57``).

Human-normalised score (``human_normalized_score``): ``(return - random) / (human - random)`` with
the reference scores of Badia et al. 2020 (Agent57), which collect those of Mnih et al. 2015 and
Wang et al. 2016 and are the values DQN Zoo uses.
"""

from __future__ import annotations

import csv
import difflib
import functools
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_SCORES_CSV = Path(__file__).with_name("atari_scores.csv")


@functools.lru_cache(maxsize=1)
def _reference_scores() -> dict[str, tuple[float, float]]:
    with open(_SCORES_CSV, newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {r["game"]: (float(r["random"]), float(r["human"])) for r in rows}


ATARI_57: tuple[str, ...] = tuple(sorted(_reference_scores()))


@functools.lru_cache(maxsize=1)
def available_roms() -> tuple[str, ...]:
    """ROM names ale-py ships (snake_case)."""
    from ale_py import roms

    rom_dir = Path(roms.__file__).parent
    return tuple(sorted(p.stem for p in rom_dir.glob("*.bin")))


def _snake(name: str) -> str:
    name = name.strip()
    m = re.fullmatch(r"(?:ALE/)?([A-Za-z0-9_]+?)(?:NoFrameskip)?(?:-v\d+)?", name)
    if m:
        name = m.group(1)
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return name.lower().replace("-", "_")


def resolve_game(name: str) -> str:
    """The ale-py ROM name for ``name``; an unknown name raises ``ValueError`` listing close matches."""
    known = available_roms()
    snake = _snake(name)
    if snake in known:
        return snake
    squashed = {g.replace("_", ""): g for g in known}
    if snake.replace("_", "") in squashed:
        return squashed[snake.replace("_", "")]
    close = difflib.get_close_matches(snake, known, n=5, cutoff=0.6)
    for g in difflib.get_close_matches(snake.replace("_", ""), list(squashed), n=5, cutoff=0.6):
        if squashed[g] not in close:
            close.append(squashed[g])
    hint = f"close matches: {', '.join(close)}" if close else "no close match"
    raise ValueError(
        f"unknown Atari game {name!r} ({hint}). Games are ale-py ROM names in snake_case; "
        f"the 57 benchmark games are: {', '.join(ATARI_57)}"
    )


def check_game(game: Any, key: str) -> None:
    """``ConfigError`` naming ``key`` (with the close names) when ``game`` is not an ale-py ROM."""
    if not isinstance(game, str):
        return
    try:
        resolve_game(game)
    except ImportError:  # no ale-py: building the env says so
        pass
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def human_normalized_score(game: str, episode_return: Any) -> Any:
    """``(return - random) / (human - random)`` for one of the 57 games (floats, arrays or tensors)."""
    key = _snake(game)
    scores = _reference_scores()
    if key not in scores:
        key = resolve_game(game)
        if key not in scores:
            raise KeyError(f"no human/random reference score for {key!r}: it is not one of the 57 benchmark games")
    random, human = scores[key]
    return (episode_return - random) / (human - random)
