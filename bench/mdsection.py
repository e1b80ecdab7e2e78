"""One marked section of docs/benchmarks.md, replaced in place (or appended), so each benchmark
script rewrites only its own figures."""

from __future__ import annotations

import re
from pathlib import Path


def splice(md: Path, text: str, begin: str, end: str) -> None:
    old = md.read_text() if md.exists() else "# Benchmarks\n"
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pat.sub(lambda _: text, old) if pat.search(old) else old.rstrip("\n") + "\n\n" + text
    md.write_text(new)
