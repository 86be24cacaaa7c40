"""Where a command will write, checked before it starts: a report path that cannot be written
fails the command at once, naming the option, never after the work (or another report) is done."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def unwritable_file(option: str, path: Path) -> str | None:
    """Why ``path`` (given as ``option``) cannot be written as a file, or None."""
    if path.is_dir():
        return f"{option} {path}: is a folder; give a file path"
    if not path.parent.is_dir():
        return f"{option} {path}: its folder {path.parent} does not exist"
    return None


def unwritable_folder(option: str, path: Path) -> str | None:
    """Why ``path`` (given as ``option``) cannot be used as a folder to write in, or None."""
    if path.exists() and not path.is_dir():
        return f"{option} {path}: is a file; give a folder"
    return None


def unwritable_files(options: Mapping[str, Path | None]) -> list[str]:
    """Every problem with the file paths of ``options`` (option name -> path, None: not given)."""
    return [
        p for option, path in options.items() if path is not None and (p := unwritable_file(option, path))
    ]
