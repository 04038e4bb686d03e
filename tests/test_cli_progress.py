"""The CLI progress bar (tqdm on a terminal, nothing otherwise)."""

from __future__ import annotations

import io
import sys

from napari_medai.cli.main import cli_progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_counts_to_the_end(monkeypatch):
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    progress = cli_progress(True)
    for i in range(0, 11):
        progress(i, 10)
    for i in range(0, 4):  # a second stage starts a second bar
        progress(i, 3)
    text = err.getvalue()
    assert "10/10" in text and "3/3" in text


def test_no_bar_when_disabled_or_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert cli_progress(True) is None
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert cli_progress(False) is None
