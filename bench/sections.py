"""Sections of docs/benchmarks.md that a separate benchmark owns.

``bench/run.py`` regenerates the whole page, but some figures come from benchmarks
that take their own setup (a browser for the dashboard, many fakes for webhooks) and
run on their own. Each writes its part between ``<!-- section: NAME -->`` and
``<!-- /section: NAME -->``; :func:`replace` swaps one section in place (or appends
it), and the page's generator keeps every section it finds (:func:`kept`), so no
run erases another's figures.
"""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(
    r"<!-- section: (?P<name>[a-z0-9-]+) -->\n.*?<!-- /section: (?P=name) -->\n", re.S
)


def block(name: str, body: str) -> str:
    return f"<!-- section: {name} -->\n{body.rstrip()}\n<!-- /section: {name} -->\n"


def kept(page: Path) -> list[str]:
    """Every owned section of ``page`` as it stands (none when there is no page)."""
    if not page.exists():
        return []
    return [found.group(0) for found in _SECTION.finditer(page.read_text())]


def replace(page: Path, name: str, body: str) -> None:
    """Put section ``name`` of ``page`` to ``body``, in place or at the end."""
    text = page.read_text() if page.exists() else "# Benchmarks\n\n"
    new = block(name, body)
    for found in _SECTION.finditer(text):
        if found.group("name") == name:
            text = text[: found.start()] + new + text[found.end() :]
            break
    else:
        text = text.rstrip("\n") + "\n\n" + new
    page.write_text(text)
