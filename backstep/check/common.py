"""What run.py and grade.py share: the console they print to, an error in one line, and the shapes
and assumptions of a formula as a batch line (JSON) or a key (TOML) gives them."""

from __future__ import annotations

from ..errors import BackstepError, UsageError
from ..shapes import parse_shape_text


def _console(stderr: bool = False, file=None):
    from rich.console import Console

    if file is not None:
        return Console(emoji=False, highlight=False, width=140, file=file, color_system=None)
    console = Console(emoji=False, highlight=False, stderr=stderr)
    if not console.is_terminal:
        console = Console(emoji=False, highlight=False, width=140, stderr=stderr)
    return console


def _one_line(err: BackstepError) -> str:
    return err.render().splitlines()[0]


def _shapes_from_json(raw) -> dict[str, tuple]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError('"shapes" must be an object such as {"x": [3, 1]}')
    shapes = {}
    for name, value in raw.items():
        if isinstance(value, str):
            try:
                shapes[name] = parse_shape_text(value)
            except ValueError as err:
                raise UsageError(f'"shapes": {name}: {err}') from None
        elif isinstance(value, list) and all(
            (isinstance(d, int) and not isinstance(d, bool) and d >= 1) or (isinstance(d, str) and d.isidentifier())
            for d in value
        ):
            shapes[name] = tuple(value)
        else:
            raise UsageError(f'"shapes": {name} must be a list of positive integers or dimension names')
    return shapes


def _assume_from_json(raw) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise UsageError('"assume" must be an object such as {"x": "positive"}')
    return dict(raw)
