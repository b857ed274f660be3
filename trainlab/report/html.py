"""Self-contained HTML pages: inline CSS and script, images embedded as base64 PNG, no
network. A page is a title plus sections; tables with class "sortable" sort by a header click.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;
background:#f4f6f9}
header{background:#1d2a44;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c9d3e6;font-size:14px}
nav{padding:6px 28px;background:#e3e8f1;font-size:13px} nav a{margin-right:14px;color:#1d2a44}
main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border-radius:8px;padding:12px 18px;margin:14px 0;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h2{font-size:17px;margin:4px 0 10px} p.note{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7ec;text-align:right}
th{background:#eef1f6;position:sticky;top:0} td:first-child,th:first-child{text-align:left}
#points-table td:nth-child(2){text-align:left}
table.sortable th{cursor:pointer} table.sortable th:after{content:" \\2195";color:#999}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#f0f4fb;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card span{font-size:12px;color:#555}
img.fig{max-width:100%;height:auto;display:block;margin:6px 0}
details summary{cursor:pointer;color:#1d2a44;font-size:14px}
pre{background:#f6f8fa;padding:10px;font-size:12px;max-height:420px;overflow:auto}
.bad{color:#b00020} .good{color:#116b2a}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-order') !== 'asc';
      t.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-order'); });
      th.setAttribute('data-order', asc ? 'asc' : 'desc');
      function key(r) {
        var c = r.cells[col], v = c.getAttribute('data-v');
        if (v === null) { v = c.textContent.trim(); }
        var f = parseFloat(v);
        return (v !== '' && !isNaN(f) && isFinite(v)) ? f : v.toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return typeof x === 'number' ? -1 : 1; }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def img(path: Path, alt: str) -> str:
    """An <img> holding the PNG at `path` inline (base64)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img class="fig" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: list[str], rows: list[list[Any]], sortable: bool = False,
          sort_values: list[list[Any]] | None = None, raw: bool = False,
          table_id: str = "") -> str:
    """An HTML table; cells are escaped unless `raw`. `sort_values` (same shape as rows) gives
    each cell's sort key (numbers sort numerically)."""
    cls = ' class="sortable"' if sortable else ""
    tid = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cells = []
        for j, c in enumerate(r):
            sv = sort_values[i][j] if sort_values else None
            attr = f' data-v="{esc(sv)}"' if sv is not None else ""
            cells.append(f"<td{attr}>{c if raw else esc(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table{cls}{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table>")


def cards(items: list[tuple[str, str]]) -> str:
    """Big-number tiles: (value, label)."""
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for v, k in items
    ) + "</div>"


def section(sid: str, title: str, body: str) -> tuple[str, str, str]:
    return sid, title, body


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: header, a navigation bar to each section, the sections."""
    nav = "".join(f'<a href="#{esc(s)}">{esc(t)}</a>' for s, t, _ in sections)
    body = "".join(f'<section id="{esc(s)}"><h2>{esc(t)}</h2>{b}</section>'
                   for s, t, b in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
            f"<main>{body}</main><script>{SORT_JS}</script></body></html>")
