"""docs/architecture.md names real modules and functions: a rename that forgets the page fails here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def resolve(dotted: str) -> object:
    """Import the longest module prefix of `dotted`, then follow the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def test_every_name_the_architecture_page_cites_exists() -> None:
    names = sorted(set(re.findall(r"`(qrt(?:\.\w+)+)`", DOC.read_text())))
    assert len(names) > 40, "the page should cite the modules and functions of each hop"
    missing = []
    for name in names:
        try:
            resolve(name)
        except (AttributeError, ModuleNotFoundError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, "docs/architecture.md cites names that do not exist:\n" + "\n".join(missing)
