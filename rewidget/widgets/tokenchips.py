"""Token chips: a prompt's tokens as clickable chips; the clicked ones are the subject.

    chips = TokenChips()
    chips.set_tokens(session.tokens("The Eiffel Tower is in"), "The Eiffel Tower is in")
    chips.click(0); chips.click(2, shift=True)   # what a click / shift-click in the browser does
    chips.selected                                # [0, 1, 2]: a contiguous run of tokens

The browser only draws the chips and reports each click (index and shift key) as a message;
the selection is decided here, in one place, so headless code and the browser agree. A
selection is always a contiguous run (the subject is the text from its first to its last
token):
- click a token next to the run: the run grows by it; elsewhere: the run is that token alone;
- click an end of the run: the run shrinks by it; inside the run: that token alone;
- shift-click: the run from the last plainly clicked token (the anchor) to this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anywidget
import traitlets as t

_ESM = r"""
function render({ model, el }) {
  el.classList.add("rewidget-tokens");
  const draw = () => {
    const tokens = model.get("tokens");
    const selected = new Set(model.get("selected"));
    const chips = tokens.map((tok, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "rewidget-token" + (selected.has(i) ? " rewidget-token-selected" : "");
      b.textContent = tok.text;          // text, never HTML
      b.title = tok.title;
      b.dataset.index = String(i);
      b.setAttribute("aria-pressed", selected.has(i) ? "true" : "false");
      return b;
    });
    if (!chips.length) {
      const p = document.createElement("span");
      p.className = "rewidget-tokens-empty";
      p.textContent = model.get("placeholder");
      chips.push(p);
    }
    el.replaceChildren(...chips);
  };
  const onClick = (e) => {
    const b = e.target.closest("button.rewidget-token");
    if (!b || !el.contains(b)) return;
    e.preventDefault();
    model.send({ event: "click", index: Number(b.dataset.index), shift: e.shiftKey });
  };
  // shift-click must not select the page's text
  const onDown = (e) => { if (e.shiftKey && e.target.closest("button.rewidget-token")) e.preventDefault(); };
  el.addEventListener("click", onClick);
  el.addEventListener("mousedown", onDown);
  model.on("change:tokens", draw);
  model.on("change:selected", draw);
  model.on("change:placeholder", draw);
  draw();
  return () => {
    el.removeEventListener("click", onClick);
    el.removeEventListener("mousedown", onDown);
    model.off("change:tokens", draw);
    model.off("change:selected", draw);
    model.off("change:placeholder", draw);
  };
}
export default { render };
"""

# JupyterLab's theme variables (light and dark), with fallbacks for pages without them
_CSS = """
.rewidget-tokens { display: flex; flex-wrap: wrap; gap: 3px; align-items: center;
  min-height: 28px; padding: 2px 0; }
.rewidget-tokens .rewidget-token {
  font-family: var(--jp-code-font-family, monospace); font-size: 13px; line-height: 18px;
  padding: 2px 5px; margin: 0; border-radius: 4px; cursor: pointer; white-space: pre;
  color: var(--jp-ui-font-color1, #222); background: var(--jp-layout-color2, #eee);
  border: 1px solid var(--jp-border-color1, #bbb); user-select: none; }
.rewidget-tokens .rewidget-token:hover { border-color: var(--jp-brand-color1, #1976d2); }
.rewidget-tokens .rewidget-token:focus-visible { outline: 2px solid var(--jp-brand-color2, #64b5f6); }
.rewidget-tokens .rewidget-token-selected {
  color: #fff; background: var(--jp-brand-color1, #1976d2);
  border-color: var(--jp-brand-color0, #0d47a1); }
.rewidget-tokens .rewidget-tokens-empty { color: var(--jp-ui-font-color2, #777); font-size: 12px;
  font-style: italic; }
"""

#: how characters a chip cannot show plainly are drawn: a space as a middle dot, so " Tower"
#: and "Tower" look different, and control characters as their Unicode control pictures
_VISIBLE = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}


def visible(text: str) -> str:
    """``text`` with spaces, newlines and control characters drawn visibly (for chips)."""
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ord(ch) < 0x20:
            out.append(chr(0x2400 + ord(ch)))
        elif ord(ch) == 0x7F:
            out.append("␡")
        else:
            out.append(ch)
    return "".join(out) or "∅"


def next_selection(selected: Sequence[int], index: int, shift: bool, anchor: int | None
                   ) -> tuple[list[int], int | None]:
    """The run of tokens after a click on ``index`` (see the module docstring) and the new
    anchor; ``selected`` is the current run."""
    sel = sorted(selected)
    if shift and (anchor is not None or sel):
        a = anchor if anchor is not None else (sel[0] if index >= sel[0] else sel[-1])
        lo, hi = min(a, index), max(a, index)
        return list(range(lo, hi + 1)), a
    if not sel:
        return [index], index
    lo, hi = sel[0], sel[-1]
    if index in (lo - 1, hi + 1):
        return list(range(min(lo, index), max(hi, index) + 1)), index
    if lo == hi == index:
        return [], None
    if index == lo:
        return list(range(lo + 1, hi + 1)), hi
    if index == hi:
        return list(range(lo, hi)), lo
    return [index], index


class TokenChips(anywidget.AnyWidget):
    """The tokens of one text as chips; click / shift-click selects a contiguous run."""

    _esm = t.Unicode(_ESM).tag(sync=True)
    _css = t.Unicode(_CSS).tag(sync=True)
    #: Per token {"text": what the chip shows, "title": its tooltip}.
    tokens = t.List(t.Dict()).tag(sync=True)
    #: Indices of the selected tokens, ascending, contiguous.
    selected = t.List(t.Int()).tag(sync=True)
    #: Shown when there are no tokens.
    placeholder = t.Unicode("Type a prompt: its tokens appear here.").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("rewidget-token-chips")
        self.anchor: int | None = None
        self.spans: list[tuple[int, int]] = []  # (start, end) characters of each token
        self.ids: list[int] = []
        self.on_msg(self._handle_click)

    def set_tokens(self, tokens: Sequence[tuple[int, str, tuple[int, int]]], text: str,
                   keep: bool = False) -> None:
        """Show ``tokens`` ((id, surface, (start, end)) as session.tokens gives them) of
        ``text``. ``keep``: keep the selection if the tokens up to its end are unchanged
        (typing after the subject keeps it)."""
        ids = [int(i) for i, _, _ in tokens]
        spans = [(int(s), int(e)) for _, _, (s, e) in tokens]
        sel = list(self.selected)
        if keep and sel and sel[-1] < len(ids) and ids[: sel[-1] + 1] == self.ids[: sel[-1] + 1] \
                and spans[: sel[-1] + 1] == self.spans[: sel[-1] + 1]:
            new_sel = sel
        else:
            new_sel = []
        self.ids, self.spans = ids, spans
        shown = [{"text": visible(text[s:e]) if e > s else visible(surface),
                  "title": f"token {k} · id {i} · {text[s:e]!r}"}
                 for k, (i, surface, (s, e)) in enumerate(tokens)]
        with self.hold_sync():
            self.tokens = shown
            if new_sel != sel:
                self.anchor = None
                self.selected = new_sel

    def click(self, index: int, shift: bool = False) -> None:
        """What a click (``shift``: shift-click) on chip ``index`` does."""
        if not 0 <= index < len(self.tokens):
            return
        sel, self.anchor = next_selection(self.selected, index, shift, self.anchor)
        self.select(sel, anchor=self.anchor)

    def select(self, positions: Sequence[int], anchor: int | None = None) -> None:
        """Select exactly ``positions`` (made a contiguous run from its first to its last)."""
        pos = sorted({int(p) for p in positions if 0 <= int(p) < len(self.tokens)})
        run = list(range(pos[0], pos[-1] + 1)) if pos else []
        self.anchor = anchor if anchor is not None else (run[0] if run else None)
        if run != list(self.selected):
            self.selected = run

    def _handle_click(self, _widget: Any, content: dict, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "click":
            index = content.get("index")
            if isinstance(index, int) and not isinstance(index, bool):
                self.click(index, bool(content.get("shift")))
