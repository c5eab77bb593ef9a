"""Tables as plain data: what a console table shows, apart from how it is drawn.

The library chooses rows, columns, texts and their emphasis (:class:`TextTable`, :class:`Cell`);
only the command line turns them into rich tables (``speechrank.cli.to_rich``). Cell texts are
data, never markup: a name such as ``[bold]`` is shown as written.

Styles are rich-compatible words (``green``, ``red``, ``dim``, ``bold``, ``cyan``) so the
renderer can pass them through; any other renderer may ignore them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["Cell", "Column", "TextTable"]

Justify = Literal["left", "right", "center"]


@dataclasses.dataclass(frozen=True)
class Cell:
    """A cell's text in one or more styled parts (``(text, style)`` pairs)."""

    parts: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, text: str, style: str = "") -> Cell:
        return cls(((text, style),))

    @classmethod
    def join(cls, *cells: Cell | str) -> Cell:
        """Cells and plain strings run together into one cell."""
        parts: list[tuple[str, str]] = []
        for cell in cells:
            parts.extend(cell.parts if isinstance(cell, Cell) else ((cell, ""),))
        return cls(tuple(parts))

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.parts)


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    justify: Justify = "left"
    no_wrap: bool = False
    overflow: Literal["fold", "ellipsis", "crop"] | None = None
    min_width: int | None = None


@dataclasses.dataclass
class TextTable:
    """A titled table of :class:`Cell` rows (with an optional caption below it)."""

    title: str
    caption: str = ""
    columns: list[Column] = dataclasses.field(default_factory=list)
    rows: list[list[Cell]] = dataclasses.field(default_factory=list)

    def add_column(self, header: str, **options: object) -> None:
        self.columns.append(Column(header, **options))  # type: ignore[arg-type]

    def add_row(self, *cells: Cell | str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([c if isinstance(c, Cell) else Cell.of(c) for c in cells])
