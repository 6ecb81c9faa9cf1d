"""The text app without a browser: token chips, the Rewrite code path, the panel, undo, errors.

Chip clicks are simulated with the message the browser sends ({"event": "click", "index",
"shift"}); buttons with ``click()``. Work runs on the app's threads, so each action is followed
by ``app.wait()``. The model is tiny-text (a seeded random Llama): gibberish, real mechanics.
"""

from __future__ import annotations

import pytest
import torch

from rewidget.core.errors import RewriteError
from rewidget.session.text import TextRewriteSession
from rewidget.widgets import RewriteApp, TextRewriteApp
from rewidget.widgets.textapp import AUTO
from rewidget.widgets.textpanel import panel_html, parse_neighbours
from rewidget.widgets.tokenchips import next_selection, visible

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("text-app-cache")  # statistics collected once per module


@pytest.fixture
def session(cache_dir):
    return TextRewriteSession("tiny-text", cache_dir=cache_dir)


@pytest.fixture
def app(session):
    a = TextRewriteApp(session)
    assert a.wait(120)
    yield a
    a.close()


def weights(s) -> dict[str, torch.Tensor]:
    return {n: s.gen.layer(n).weight.detach().clone() for n in s.gen.layer_names()}


def same_weights(s, w0: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(s.gen.layer(n).weight, w) for n, w in w0.items())


def chip_click(app: TextRewriteApp, index: int, shift: bool = False) -> None:
    """What a click on a chip in the browser sends."""
    app.chips._handle_msg({"content": {"data": {"method": "custom", "content": {
        "event": "click", "index": index, "shift": shift}}}, "buffers": []})


def fill(app: TextRewriteApp, prompt: str = PROMPT, subject: str = "The Eiffel Tower",
         target: str = " Rome") -> None:
    app.prompt.value = prompt
    app.select_subject(subject)
    app.target.value = target


def test_rewrite_app_hands_a_text_session_to_the_text_app(session):
    app = RewriteApp(session, preload=False)
    try:
        assert isinstance(app, TextRewriteApp)
        assert app.layer.value == session.layer
        names = [v for _, v in app.layer.options]
        assert names == [AUTO, *session.gen.layer_names()]
    finally:
        app.close()
    with pytest.raises(RewriteError, match="not a text session"):
        TextRewriteApp(object())


def test_chips_click_and_shift_click(app):
    app.prompt.value = PROMPT
    toks = app.session.tokens(PROMPT)
    assert [c["text"] for c in app.chips.tokens] == [visible(PROMPT[a:b]) for _, _, (a, b) in toks]
    assert app.chips.tokens[1]["text"].startswith("·")  # the space before "Eiffel" shows
    chip_click(app, 0)
    assert app.chips.selected == [0]
    chip_click(app, 3, shift=True)  # a run from the anchor
    assert app.chips.selected == [0, 1, 2, 3]
    chip_click(app, 4)  # next to the run: grows
    assert app.chips.selected == [0, 1, 2, 3, 4]
    chip_click(app, 4)  # an end of the run: shrinks
    assert app.chips.selected == [0, 1, 2, 3]
    chip_click(app, 2)  # inside: that token alone
    assert app.chips.selected == [2]
    chip_click(app, 2)  # the only one: nothing
    assert app.chips.selected == []
    chip_click(app, 99)  # not a chip: ignored
    assert app.chips.selected == []
    # the subject line names the selected text, escaped
    positions = app.select_subject("The Eiffel Tower")
    assert "The Eiffel Tower" in app.subject.value and positions[0] == 0
    # typing after the subject keeps the selection; changing the subject clears it
    app.prompt.value = PROMPT + " Paris and"
    assert app.chips.selected == positions
    app.prompt.value = "A" + PROMPT
    assert app.chips.selected == []


def test_next_selection_rules():
    assert next_selection([], 3, False, None) == ([3], 3)
    assert next_selection([3], 5, True, 3) == ([3, 4, 5], 3)
    assert next_selection([3, 4, 5], 1, True, 3) == ([1, 2, 3], 3)
    assert next_selection([3, 4], 6, False, 3) == ([6], 6)
    assert next_selection([3, 4], 2, False, 3) == ([2, 3, 4], 2)


def test_rewrite_fills_the_panel_and_undo_restores_weights_bit_exactly(app):
    s = app.session
    w0 = weights(s)
    fill(app)
    app.paraphrases.value = "The Eiffel Tower stands in the city of\n\n"
    app.neighbours.value = "The Louvre is located in the city of -> Paris"
    app.essence.value = "The Eiffel Tower was designed by"
    assert app.check()
    assert app.wait(60)
    assert [r["kind"] for r in app.panel_rows] == ["edit", "paraphrase", "neighbour", "essence"]
    assert all(r["now"] == r["before"] for r in app.panel_rows)  # nothing edited yet
    assert same_weights(s, w0) and len(s.history) == 0
    app.rewrite_button.click()
    assert app.wait(120)
    assert app.messages.kind == "success" and "installed" in app.messages.last, app.messages.last
    assert len(s.history) == 1 and not same_weights(s, w0)
    req = s.history.edits[0].request
    assert req.facts[0].subject == "The Eiffel Tower" and req.facts[0].target == " Rome"
    assert req.layer == app.layer.value
    assert "{} was designed by" in req.essence  # the essence prompt guards the edit
    rows = app.panel_rows
    assert [r["kind"] for r in rows] == ["edit", "paraphrase", "neighbour", "essence"]
    assert rows[2]["old"] == " Paris" and rows[0]["new"] == " Rome"
    assert any(r["now"] != r["before"] for r in rows)  # the "now" column follows the edit
    html = app.panel.value
    assert html.count("rewidget-panel-row") == 4 and "The Louvre is located" in html
    assert app.history.applied == 1 and "The Eiffel Tower → Rome" in app.history.rows.children[0] \
        .children[1].value
    # undo: bit for bit back to W₀, the panel's "now" equals "before" again
    app.undo_button.click()
    assert app.wait(60)
    assert same_weights(s, w0)
    assert app.history.applied == 0 and app.history.undone == 1
    assert all(r["now"] == r["before"] for r in app.panel_rows)
    app.redo_button.click()
    assert app.wait(60)
    assert len(s.history) == 1 and not same_weights(s, w0)
    # the history's strength slider scales the edit; 0 switches it off exactly
    slider = app.history.rows.children[0].children[2]
    slider.value = 0.0
    assert app.wait(60)
    assert s.history.entries[0].strength == 0.0 and same_weights(s, w0)
    slider.value = 1.0
    assert app.wait(60) and not same_weights(s, w0)
    app.reset_button.click()
    assert app.wait(60)
    assert same_weights(s, w0) and "Reset" in app.messages.last


@pytest.mark.parametrize("case, problem", [
    ("empty prompt", "The prompt is empty."),
    ("no token", "No subject token is selected."),
    ("empty target", "The new target is empty."),
    ("bad neighbour", "has no true object"),
    ("trailing space", "ends with whitespace"),
])
def test_bad_input_shows_the_error_with_its_fix_and_changes_nothing(app, case, problem):
    s = app.session
    w0 = weights(s)
    fill(app)
    if case == "empty prompt":
        app.prompt.value = "   "
    elif case == "no token":
        app.chips.select([])
    elif case == "empty target":
        app.target.value = "  "
    elif case == "bad neighbour":
        app.neighbours.value = "The Louvre is located in"
    elif case == "trailing space":
        app.prompt.value = PROMPT + " "
    for press in (app.rewrite_button, app.check_button):
        before = app.panel.value
        press.click()
        assert app.wait(30)
        assert app.messages.kind == "error", app.messages.last
        assert problem in app.messages.last and "Fix:" in app.messages.last
        assert "Fix:" in app.messages._html.value  # shown, not only recorded
        assert app.panel.value == before and not app.busy
    assert len(s.history) == 0 and same_weights(s, w0)


def test_target_that_tokenises_to_nothing_is_reported_from_the_worker(app, monkeypatch):
    s = app.session
    w0 = weights(s)
    fill(app)
    real = s.gen.encode
    monkeypatch.setattr(s.gen, "encode", lambda text: [] if text.strip() == "Rome" else real(text))
    app.rewrite()
    assert app.wait(60)
    assert app.messages.kind == "error" and "tokenises to nothing" in app.messages.last
    assert len(s.history) == 0 and same_weights(s, w0)


def test_cancel_changes_nothing(app):
    s = app.session
    w0 = weights(s)
    fill(app)
    assert app.rewrite()
    app.tasks.cancel_button.click()
    assert app.wait(60)
    assert "cancelled" in app.messages.last and app.messages.kind == "warning"
    assert len(s.history) == 0 and same_weights(s, w0)
    assert not app.busy and not app.rewrite_button.disabled


def test_auto_layer_installs_the_suggestions_best(app):
    fill(app)
    app.layer.value = AUTO
    app.rewrite()
    assert app.wait(120)
    assert "suggested among" in app.messages.last, app.messages.last
    assert len(app.session.history) == 1
    assert app.session.history.edits[0].layer in app.session.gen.layer_names()


def test_headless_edits_show_up_in_the_app(app):
    s = app.session
    s.rewrite(s.request(PROMPT, "The Eiffel Tower", " Rome"))  # "another cell"
    assert app.wait(60)
    assert app.history.applied == 1
    assert [r["kind"] for r in app.panel_rows] == ["edit"]  # the last edit's request
    s.undo()
    assert app.wait(60)
    assert app.history.applied == 0 and app.panel_rows[0]["now"] == app.panel_rows[0]["before"]


def test_save_load_replay_and_deltas(app, tmp_path):
    s = app.session
    w0 = weights(s)
    fill(app)
    app.layer.value = s.gen.layer_names()[0]
    app.rewrite()
    assert app.wait(120)
    edited = weights(s)
    app.request_path.value = str(tmp_path / "fact.json")
    app.save_button.click()
    app.delta_path.value = str(tmp_path / "fact.delta.safetensors")
    app.export_delta_button.click()
    assert app.wait(30) and app.messages.kind == "success", app.messages.last
    assert (tmp_path / "fact.json").exists() and (tmp_path / "fact.delta.safetensors").exists()
    app.reset()
    assert app.wait(30) and same_weights(s, w0)
    # load: the inputs show the request; replay gives the same weights
    app.prompt.value, app.target.value = "", ""
    app.layer.value = s.gen.layer_names()[-1]
    app.load_button.click()
    assert app.wait(30) and app.messages.kind == "success", app.messages.last
    assert app.prompt.value == PROMPT and app.target.value == " Rome"
    assert app.layer.value == s.gen.layer_names()[0]
    assert app.fact().subject == "The Eiffel Tower"
    app.replay_button.click()
    assert app.wait(120) and "Replayed" in app.messages.last
    assert same_weights(s, edited)
    app.reset()
    app.load_delta_button.click()
    assert app.wait(30) and "Installed 1 edit" in app.messages.last
    assert same_weights(s, edited)
    # a missing file: the error and its fix, nothing changes
    app.request_path.value = str(tmp_path / "missing.json")
    app.load_button.click()
    assert app.wait(30) and app.messages.kind == "error" and "Fix:" in app.messages.last
    app.request_path.value = " "
    app.save_button.click()
    assert app.messages.kind == "error" and "No file name" in app.messages.last


def test_every_user_string_is_escaped_in_the_panel_and_subject(app):
    app.prompt.value = "<b>Tower</b> & <script>x</script> is in"
    app.select_subject("<script>x</script>")
    assert "<script>" not in app.subject.value and "&lt;script&gt;" in app.subject.value
    row = {"kind": "neighbour", "prompt": "<img src=x onerror=alert(1)>", "old": " <i>a</i>",
           "new": " Rome", "before": {"completion": "</td><script>", "p_old": 0.5, "p_new": 0.1},
           "now": {"completion": "\x16ok\n", "p_old": 0.2, "p_new": 0.7}}
    html = panel_html([row], edits=1)
    for raw in ("<img", "<script>", "<i>a"):
        assert raw not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "␖ok↵" in html
    assert "rewidget-changed" in html


def test_parse_neighbours():
    assert parse_neighbours("A is in -> Paris\n\nB is in → Rome \nC is in | X") == [
        ("A is in", " Paris"), ("B is in", " Rome"), ("C is in", " X")]
    with pytest.raises(RewriteError, match="no true object"):
        parse_neighbours("A is in ->")
