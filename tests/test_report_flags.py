"""The report marks flagged label-free values per cell: ``*`` not converged in N,
``!`` dominated by one direction, in the within-layer correlation table and per series."""

from __future__ import annotations

from html.parser import HTMLParser

from speechrank.results import ResultRow

STEPS = [0, 100, 200, 300, 400]
LAYERS = ["0", "1", "2"]


def _convergence(converged: bool) -> dict:
    return {"n_rows": [5, 10, 20, 40], "values": [1.0, 2.0, 3.0, 3.0 if converged else 4.0],
            "last_change": 0.0 if converged else 0.25, "tolerance": 0.02,
            "converged": converged}


def _rows() -> list[ResultRow]:
    rows = []
    for i, step in enumerate(STEPS):
        for j, layer in enumerate(LAYERS):
            rank = 10.0 + 3.0 * i + j
            conventions = {
                # layer 1 is not converged at two checkpoints; layer 2 dominated at one
                "convergence": _convergence(not (layer == "1" and i in (1, 3))),
                "dominance": {"first_direction_share": 0.95 if (layer, i) == ("2", 4) else 0.3,
                              "dominated": (layer, i) == ("2", 4)},
            }
            rows.append(ResultRow("m", f"c{step}", step, "d", layer, "sum", "rankme", rank,
                                  40, 8, conventions=conventions))
            rows.append(ResultRow("m", f"c{step}", step, "lab", layer, "mean", "accuracy",
                                  0.3 + 0.02 * rank, 50, 8, task="ks", split="test",
                                  domain="in", conventions={"seed": 0}))
    return rows


class _Tables(HTMLParser):
    """Every table as rows of (text, title) cells, with the heading before it."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[tuple[str, str]]], str]] = []
        self._heading = ""
        self._in: str | None = None
        self._text = ""
        self._title = ""

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "h3"):
            self._in, self._text = "heading", ""
        elif tag == "table":
            self.tables.append((self._heading, [], ""))
        elif tag == "tr":
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._in, self._text, self._title = "cell", "", dict(attrs).get("title") or ""
        elif tag == "caption":
            self._in, self._text = "caption", ""

    def handle_endtag(self, tag):
        if tag in ("h2", "h3") and self._in == "heading":
            self._heading, self._in = self._text, None
        elif tag in ("td", "th") and self._in == "cell":
            self.tables[-1][1][-1].append((self._text, self._title))
            self._in = None
        elif tag == "caption" and self._in == "caption":
            heading, rows, _ = self.tables[-1]
            self.tables[-1] = (heading, rows, self._text)
            self._in = None

    def handle_data(self, data):
        if self._in:
            self._text += data


def _table(tables, heading):
    return next((rows, caption) for h, rows, caption in tables if h == heading)


def test_flags_are_marked_per_cell(tmp_path):
    from speechrank.report import write_report

    text = write_report(_rows(), tmp_path / "out", n_bootstrap=20).read_text(encoding="utf-8")
    parser = _Tables()
    parser.feed(text)
    rows, caption = _table(parser.tables, "Within each layer, across checkpoints")
    header = [t for t, _ in rows[0]]
    cells = dict(zip(header, rows[1], strict=True))
    # the value, its mark, then the interval on a second line
    value = {k: v[0].split("[")[0] for k, v in cells.items()}
    assert value["layer 0"] == "+1.00" and not cells["layer 0"][0].count("*")
    assert value["layer 1"] == "+1.00 *"
    assert "2 of 5 values not converged in N" in cells["layer 1"][1]
    assert "n=5" in cells["layer 1"][1]  # the cell's own hover text is kept
    assert value["layer 2"] == "+1.00 !"
    assert "1 of 5 dominated by one direction" in cells["layer 2"][1]
    assert "* not converged" in caption and "! one direction" in caption

    rows, caption = _table(parser.tables, "Conventions and counts behind every number")
    header = [t for t, _ in rows[0]]
    by_kind = {row[0][0]: dict(zip(header, row, strict=True)) for row in rows[1:]}
    flags = by_kind["metric"]["flags"][0]
    assert flags.startswith("*!") and "2 of 15 values not converged" in flags
    assert "1 of 15 dominated" in flags
    assert by_kind["score"]["flags"][0] == "–"
    assert "* not converged" in caption


def test_no_flags_no_marks(tmp_path):
    from speechrank.report import write_report

    clean = [ResultRow(r.model, r.checkpoint, r.step, r.dataset, r.layer, r.pooling, r.metric,
                       r.value, r.n_rows, r.dim, task=r.task, split=r.split, domain=r.domain,
                       conventions={"eps": 1e-7}) for r in _rows()]
    text = write_report(clean, tmp_path / "out", n_bootstrap=20).read_text(encoding="utf-8")
    parser = _Tables()
    parser.feed(text)
    rows, caption = _table(parser.tables, "Within each layer, across checkpoints")
    assert caption == "" and not any(t.endswith(("*", "!")) for row in rows for t, _ in row)
    rows, caption = _table(parser.tables, "Conventions and counts behind every number")
    assert caption == "" and all(row[-1][0] == "–" for row in rows[1:])
