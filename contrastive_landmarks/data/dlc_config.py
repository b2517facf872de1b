"""DeepLabCut's ``config.yaml``: the few keys this library uses, read without a YAML library."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import require_file

__all__ = ["read_dlc_config"]

_LAYOUT = "<project>/config.yaml (DeepLabCut's project layout)"

_CONFIG_KEYS = (
    "Task",
    "scorer",
    "bodyparts",
    "skeleton",
    "multianimalproject",
    "individuals",
    "uniquebodyparts",
    "multianimalbodyparts",
)


# -- config.yaml: the few keys used, without a YAML library ----------------------------------------------------
def _strip_comment(text: str) -> str:
    quote = None
    for position, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (position == 0 or text[position - 1].isspace()):
            return text[:position].rstrip()
    return text.rstrip()


def _scalar(text: str):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else inner.replace('\\"', '"')
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("", "~", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _flow(text: str, path: Path):
    """Parse a YAML flow sequence such as ``[['Hand', 'Finger1'], [a, b]]``."""
    position = 0

    def value():
        nonlocal position
        while position < len(text) and text[position].isspace():
            position += 1
        if position < len(text) and text[position] == "[":
            position += 1
            items = []
            while True:
                while position < len(text) and text[position].isspace():
                    position += 1
                if position >= len(text):
                    raise ValueError(f"{path}: unclosed '[' in {text!r}")
                if text[position] == "]":
                    position += 1
                    return items
                items.append(value())
                while position < len(text) and text[position].isspace():
                    position += 1
                if position < len(text) and text[position] == ",":
                    position += 1
        if position < len(text) and text[position] in "'\"":
            quote, start = text[position], position
            position += 1
            while position < len(text) and not (text[position] == quote and text[position + 1 : position + 2] != quote):
                position += 2 if text[position] == quote else 1
            position += 1
            return _scalar(text[start:position])
        start = position
        while position < len(text) and text[position] not in ",]":
            position += 1
        return _scalar(text[start:position])

    result = value()
    if text[position:].strip():
        raise ValueError(f"{path}: cannot read {text!r} (left over: {text[position:]!r})")
    return result


def _block(lines: list[tuple[int, str]], path: Path):
    """Parse a block sequence (``- item`` lines, nested as ``- - a`` / ``  - b``) from ``(indent, text)`` lines."""
    expanded: list[tuple[int, str]] = []
    for indent, text in lines:  # "- - a" is "-" then "- a" two columns further in
        while text.startswith("- ") and text[2:].lstrip().startswith("-"):
            rest = text[2:].lstrip()
            expanded.append((indent, "-"))
            indent, text = indent + len(text) - len(rest), rest
        expanded.append((indent, text))
    position = 0

    def sequence(indent: int) -> list:
        nonlocal position
        items = []
        while position < len(expanded) and expanded[position][0] == indent:
            text = expanded[position][1]
            if not (text == "-" or text.startswith("- ")):
                raise ValueError(f"{path}: expected a '- item' line, got {text!r}")
            position += 1
            rest = text[1:].strip()
            if rest:
                items.append(_flow(rest, path) if rest.startswith("[") else _scalar(rest))
            elif position < len(expanded) and expanded[position][0] > indent:
                items.append(sequence(expanded[position][0]))
            else:
                items.append(None)
        return items

    if not expanded:
        return None
    result = sequence(expanded[0][0])
    if position != len(expanded):
        raise ValueError(f"{path}: cannot read the lines from {expanded[position][1]!r} on (mappings are not read)")
    return result


def read_dlc_config(path: str | os.PathLike) -> dict:
    """The keys of a DeepLabCut ``config.yaml`` this reader uses (``scorer``, ``bodyparts``, ``skeleton``,
    ``multianimalproject``, ``individuals``, ``uniquebodyparts``, ``multianimalbodyparts``, ``Task``),
    parsed without a YAML library: scalars, flow sequences (``[a, [b, c]]``) and block sequences
    (``- a``, ``- - a``); and ``video_sets`` as the list of its video paths (the mapping's keys, as written).
    Other keys are skipped unread.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one of those keys cannot be read (names the file).
    """
    path = require_file(path, "DeepLabCut config.yaml", _LAYOUT)
    entries: dict[str, tuple[str, list[tuple[int, str]]]] = {}
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        text = _strip_comment(raw.replace("\t", "    "))
        if not text.strip():
            continue
        indent = len(text) - len(text.lstrip())
        top = re.match(r"^([A-Za-z_][\w ]*?)\s*:(?:\s+(.*)|$)", text) if indent == 0 else None
        if top and not text.startswith("-"):
            current = top.group(1)
            entries[current] = ((top.group(2) or "").strip(), [])
        elif current is not None:
            entries[current][1].append((indent, text.strip()))
    config = {}
    for key in _CONFIG_KEYS:
        if key not in entries:
            continue
        inline, lines = entries[key]
        if inline and lines:
            raise ValueError(f"{path}: {key} has both an inline value and lines below it")
        if inline.startswith("["):
            config[key] = _flow(inline, path)
        elif inline:
            config[key] = _scalar(inline)
        else:
            config[key] = _block(lines, path)
    if "video_sets" in entries:
        config["video_sets"] = _mapping_keys(entries["video_sets"][1])
    return config


def _mapping_keys(lines: list[tuple[int, str]]) -> list[str]:
    """The keys of a block mapping's outermost level (``path:`` or ``path: value`` lines), in order; a key
    may itself hold colons (``C:\\videos\\a.mp4:``), so it ends at the last ``:`` that ends the line or
    precedes a space."""
    if not lines:
        return []
    outer = min(indent for indent, _ in lines)
    keys = []
    for indent, text in lines:
        if indent != outer:
            continue
        key = text[:-1] if text.endswith(":") else text.rsplit(": ", 1)[0]
        keys.append(key.strip().strip("'\""))
    return keys


# -- CollectedData_<scorer>.csv / .h5 ---------------------------------------------------------------------------
