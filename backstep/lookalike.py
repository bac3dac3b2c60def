"""Names that read like other names: letters of other scripts that look like ASCII ones, and
invisible characters Python accepts inside a name. A message about an unknown name names each such
character (`U+0445 CYRILLIC SMALL LETTER HA, which looks like x`) and suggests the name it reads as."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

# Letters of other scripts that read as ASCII ones; NFKC keeps them apart (it folds fullwidth and
# other compatibility forms, which `_looks_like` handles by itself).
LOOKALIKES = {
    **dict(zip("аеорсухіјѕ", "aeopcyxijs", strict=True)),  # Cyrillic
    **dict(zip("АВЕКМНОРСТХІЈЅ", "ABEKMHOPCTXIJS", strict=True)),
    **dict(zip("οναρ", "ovap", strict=True)),  # Greek
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),
}
# Characters Python accepts inside a name that show nothing at all (x\u3164 prints as x).
INVISIBLE_WORDS = ("FILLER", "VARIATION SELECTOR", "GRAPHEME JOINER")


def _looks_like(ch: str) -> str | None:
    """The ASCII text a non-ASCII character reads as, '' for an invisible one, None if neither."""
    if ch.isascii():
        return None
    if ch in LOOKALIKES:
        return LOOKALIKES[ch]
    folded = unicodedata.normalize("NFKC", ch)
    if folded != ch and folded.isascii() and folded.isprintable() and folded.strip():
        return folded
    name = unicodedata.name(ch, "")
    if unicodedata.category(ch) == "Cf" or any(word in name for word in INVISIBLE_WORDS):
        return ""
    return None


def _skeleton(name: str) -> str:
    """The name as it reads: look-alike letters as their ASCII twins, invisible characters dropped."""
    return "".join(ch if (seen := _looks_like(ch)) is None else seen for ch in name)


def lookalike_note(name: str) -> str:
    """` (U+0445 CYRILLIC SMALL LETTER HA, which looks like x)` for each deceptive character, or ''."""
    parts = []
    for ch in dict.fromkeys(name):
        seen = _looks_like(ch)
        if seen is not None:
            what = f"which looks like {seen}" if seen else "which is invisible"
            parts.append(f"U+{ord(ch):04X} {unicodedata.name(ch, 'an unnamed character')}, {what}")
    return f" ({'; '.join(parts)})" if parts else ""


def unknown_name_message(what: str, name: str, known: Iterable[str], hint: str = "", then: str = "") -> str:
    """`unknown name х (U+0445 CYRILLIC SMALL LETTER HA, which looks like x); did you mean x?`

    A name written with a letter of another script reads exactly like a known one, so the message
    names each such character; a known name that reads the same (either way round: a Latin x for
    the formula's Cyrillic х too) is suggested in place of `hint`. `then` goes before the hint."""
    skeleton = _skeleton(name)
    match = next((k for k in known if k != name and _skeleton(k) == skeleton), None)
    if match is not None:
        hint = f"; did you mean {match}{lookalike_note(match)}?"
    return f"{what} {name}{lookalike_note(name)}{then}{hint}"


# Names NumPy and math give constants. `pi` means π, as np.pi does (unless the program declares a
# variable of that name); the others stay inputs, with a note, since `e` is a common variable name.
CONSTANT_NAMES = {"pi": "pi"}
LOOKS_CONSTANT = {"e": "exp(1)", "tau": "2*pi", "inf": "a large number", "euler_gamma": "0.5772156649015329"}


def constant_note(name: str) -> str | None:
    """The note for an input whose name NumPy or math gives a constant, or None."""
    if name not in LOOKS_CONSTANT:
        return None
    return (
        f"{name} is an input here (verification draws it at random), not numpy's {name}; "
        f"for the constant write {LOOKS_CONSTANT[name]}"
    )
