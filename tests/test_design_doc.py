"""docs/design.md: every section the code, the tests and the README cite exists, and nothing
cites a design document the repository does not hold."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
CITATION = re.compile(r'docs/design\.md,\s*"([^"]+)"')


def _sections() -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$",
                                                     DESIGN.read_text(encoding="utf-8"), re.M)}


def _sources() -> list[Path]:
    return [*sorted((REPO / "src").rglob("*.py")), *sorted((REPO / "tests").rglob("*.py")),
            REPO / "README.md"]


def _flat(text: str) -> str:
    """Lines joined, so that a citation wrapped over two lines (of a docstring or of ``#:``
    comments) reads as one."""
    return re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", text)


def citations() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in _sources():
        if path == Path(__file__):
            continue
        for section in CITATION.findall(_flat(path.read_text(encoding="utf-8"))):
            found.setdefault(section, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_cited_section_exists():
    sections = _sections()
    cited = citations()
    assert {"Layers", "Rows and layer names", "The metrics"} <= set(cited)
    missing = {section: sorted(where) for section, where in cited.items()
               if section not in sections}
    assert not missing, f"sections cited but not in docs/design.md: {missing}"


def test_nothing_cites_a_design_document_outside_the_repository():
    stale = [str(path.relative_to(REPO)) for path in _sources() if path != Path(__file__)
             and "DESIGN.md" in path.read_text(encoding="utf-8")]
    assert not stale, stale


def test_a_wrapped_citation_is_read_whole():
    text = '"""Layers follow (docs/design.md, "Rows and\n    layer names")."""\n'
    assert CITATION.findall(_flat(text)) == ["Rows and layer names"]
    assert CITATION.findall(_flat('#: see docs/design.md,\n#: "Adding a metric"')) == [
        "Adding a metric"]
