"""The text app's evaluation panel: per prompt, the completion and p(old) vs p(new), before
(W₀) and now; and the parsing of the prompt lists the user types.

    rows = session.panel(request, paraphrases, neighbours, essence)
    html = panel_html(rows, edits=len(session.history))   # an HTML table, every string escaped
    neighbours = parse_neighbours("The Louvre is in -> Paris\\nThe Colosseum is in → Rome")

Colours are JupyterLab theme variables (light and dark), with fallbacks elsewhere.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from ..core.errors import RewriteError
from .tokenchips import visible

#: what separates a neighbour prompt from its true object, tried in this order
SEPARATORS = ("->", "→", "|")

KINDS = {"edit": "edit", "paraphrase": "paraphrase", "neighbour": "neighbour",
         "essence": "essence"}


def parse_lines(text: str) -> list[str]:
    """Non-empty lines, trailing whitespace dropped (the tokenizer would read it as a token)."""
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def parse_neighbours(text: str) -> list[tuple[str, str]]:
    """(prompt, true object) per line "prompt -> object" (or →, |)."""
    out = []
    for n, line in enumerate(parse_lines(text), 1):
        for sep in SEPARATORS:
            if sep in line:
                prompt, obj = line.rsplit(sep, 1)
                prompt, obj = prompt.rstrip(), obj.strip()
                if prompt.strip() and obj:
                    out.append((prompt, " " + obj))
                    break
        else:
            raise RewriteError(f"Neighbour line {n} ({line!r}) has no true object.",
                               "write one per line as 'prompt -> true object', e.g. 'The Louvre "
                               "is located in the city of -> Paris'.")
    return out


def fmt_p(p: float) -> str:
    """A probability for people: percent when large, scientific when tiny, — when absent."""
    if p is None or not math.isfinite(p):
        return "—"
    if p >= 0.01:
        return f"{100 * p:.1f}%"
    return f"{p:.2e}"  # three significant digits: a small edit still shows


def prefers(row: dict, when: str) -> str:
    """"new", "old" or "" (no objects): which object the model prefers after the prompt."""
    p = row[when]
    if not (math.isfinite(p["p_old"]) and math.isfinite(p["p_new"])):
        return ""
    return "new" if p["p_new"] > p["p_old"] else "old"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


_TABLE_CSS = ("border-collapse:collapse;font-size:12px;line-height:16px;"
              "color:var(--jp-ui-font-color1,#222);margin-top:4px")
_TH = ("text-align:left;padding:3px 8px;font-weight:600;background:var(--jp-layout-color2,#eee);"
       "border-bottom:1px solid var(--jp-border-color1,#bbb);white-space:nowrap")
_TD = "padding:3px 8px;border-bottom:1px solid var(--jp-border-color2,#ddd);vertical-align:top"
_MONO = ("font-family:var(--jp-code-font-family,monospace);white-space:pre-wrap;"
         "word-break:break-all;max-width:260px")
_GOOD = "color:var(--jp-success-color1,#2e7d32);font-weight:600"
_BAD = "color:var(--jp-error-color1,#c62828);font-weight:600"
_DIM = "color:var(--jp-ui-font-color2,#777)"
_CHANGED = "box-shadow:inset 3px 0 0 var(--jp-brand-color1,#1976d2)"


def _verdict(row: dict) -> str:
    """Who wins now, coloured by whether that is what the edit wants for this kind of row."""
    now, before = prefers(row, "now"), prefers(row, "before")
    if not now:
        return f"<span style='{_DIM}'>—</span>"
    want = "old" if row["kind"] == "neighbour" else "new"
    style = _GOOD if now == want else _BAD
    return (f"<span style='{_DIM}'>{before}</span> → <span class='rewidget-prefers' "
            f"style='{style}'>{now}</span>")


def _p_cell(css: str, before: float, now: float) -> tuple[str, str, str]:
    b, n = fmt_p(before), fmt_p(now)
    changed = b != n
    return (css + (" rewidget-changed" if changed else ""),
            "white-space:nowrap" + (";" + _CHANGED if changed else ""), f"{b} → <b>{n}</b>")


def panel_html(rows: Sequence[dict], edits: int = 0, note: str = "") -> str:
    """The panel as an HTML table (rows as session.panel returns them)."""
    if not rows:
        return (f"<div class='rewidget-panel-empty' style='{_DIM};font-size:12px;padding:4px 0'>"
                "The panel fills in when you press <b>Check</b> or <b>Rewrite</b>: for each "
                "prompt, the completion and p(old) vs p(new), before (W₀) and now.</div>")
    head = ["", "prompt", "old → new", "completion W₀", "completion now", "p(old) W₀ → now",
            "p(new) W₀ → now", "prefers"]
    out = [f"<table class='rewidget-panel-table' style='{_TABLE_CSS}'><thead><tr>"]
    out += [f"<th style='{_TH}'>{_esc(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        b, n = row["before"], row["now"]
        kind = KINDS.get(row["kind"], row["kind"])
        changed = n["completion"] != b["completion"]
        objs = (f"{_esc(visible(row['old']))} → {_esc(visible(row['new']))}"
                if row["old"] or row["new"] else "—")
        cells = [
            ("rewidget-kind", _DIM, _esc(kind)),
            ("rewidget-prompt", "", _esc(row["prompt"])),
            ("rewidget-objects", _MONO, objs),
            ("rewidget-before", _MONO, _esc(visible(b["completion"]))),
            ("rewidget-now" + (" rewidget-changed" if changed else ""),
             _MONO + (";" + _CHANGED if changed else ""), _esc(visible(n["completion"]))),
            *(_p_cell(f"rewidget-p-{which}", b[f"p_{which}"], n[f"p_{which}"])
              for which in ("old", "new")),
            ("rewidget-verdict", "white-space:nowrap", _verdict(row)),
        ]
        out.append(f"<tr class='rewidget-panel-row rewidget-row-{_esc(row['kind'])}'>")
        out += [f"<td class='{c}' style='{_TD};{s}'>{v}</td>" for c, s, v in cells]
        out.append("</tr>")
    out.append("</tbody></table>")
    caption = (f"W₀: the original weights; now: with the {edits} applied edit(s). A blue bar "
               "marks what changed." if edits else
               "W₀: the original weights; now: the same (no edit applied).")
    if note:
        caption = f"{note} {caption}"
    out.append(f"<div class='rewidget-panel-caption' style='{_DIM};font-size:11px;"
               f"margin-top:2px'>{_esc(caption)}</div>")
    return "".join(out)
