"""Headless calls show where long work is: a tqdm bar unless quiet or given a callback."""

from rewidget import RewriteSession


def test_statistics_draw_a_bar_by_default_and_none_when_quiet_or_given_a_callback(
        tmp_path, capsys):
    s = RewriteSession("tiny", stats_samples=600, cache_dir=tmp_path / "a")
    s.statistics("main.7")
    err = capsys.readouterr().err
    assert "statistics (main.7)" in err and "600/600" in err

    quiet = RewriteSession("tiny", stats_samples=600, cache_dir=tmp_path / "b", quiet=True)
    quiet.statistics("main.7")
    assert capsys.readouterr().err == ""

    seen = []
    own = RewriteSession("tiny", stats_samples=600, cache_dir=tmp_path / "c")
    own.statistics("main.7", progress=lambda done, total, what: seen.append(done))
    assert seen and seen[-1] == 600 and capsys.readouterr().err == ""
    # from the disk cache: nothing to show
    again = RewriteSession("tiny", stats_samples=600, cache_dir=tmp_path / "a")
    again.statistics("main.7")
    assert capsys.readouterr().err == ""
