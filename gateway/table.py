"""Lists the console prints: a header row, then one row per item, columns aligned.

`Table` streams (rows go out as they come, for output that waits on the network):
each column is as wide as its header or the width given, and a longer value only
pushes the rest of its own row along. `table()` renders known rows, each column as
wide as its widest value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

GAP = "  "


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    cells = [v.ljust(w) for v, w in zip(values[:-1], widths, strict=False)]
    return GAP.join([*cells, values[-1]]).rstrip()


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    text = [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in [list(headers), *text]) for i in range(len(headers))]
    return [_line(headers, widths), *(_line(r, widths) for r in text)]


class Table:
    def __init__(
        self,
        headers: Sequence[str],
        widths: Sequence[int] = (),
        out: Callable[[str], None] = print,
    ) -> None:
        self._headers = list(headers)
        given = list(widths) + [0] * len(headers)
        self._widths = [max(len(h), w) for h, w in zip(headers, given, strict=False)]
        self._out = out
        self._started = False

    def row(self, *values: object) -> None:
        if not self._started:
            self._out(_line(self._headers, self._widths))
            self._started = True
        self._out(_line([str(v) for v in values], self._widths))
