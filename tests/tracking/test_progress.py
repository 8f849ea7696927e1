"""Progress views: rich on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from atomlab.tracking import EtaEstimate, PlainProgress, ProgressState, RichProgress, auto_view

STATE = ProgressState(
    run_id="r1",
    pipeline="p",
    position=2,
    total=5,
    step="train",
    step_elapsed_s=65,
    run_elapsed_s=200,
    eta=EtaEstimate(remaining_s=600, low_s=500, high_s=700, basis="history+pace"),
    fraction=0.25,
)


def test_headline_names_step_elapsed_eta_band_and_share():
    assert STATE.headline() == (
        "Step 2/5: train (elapsed 3m20s, step 1m05s, ETA 10m00s (8m20s-11m40s), 25%)"
    )


def test_rich_view_draws_the_headline_and_a_bar_on_a_terminal():
    out = io.StringIO()
    view = RichProgress(Console(file=out, force_terminal=True, width=100))
    view.event("[r1] Step 2/5: train started")
    view.update(STATE)
    view.close()
    text = out.getvalue()
    assert "Step 2/5: train started" in text
    assert "ETA 10m00s" in text and "━" in text


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_view_picks_rich_only_on_a_terminal_without_json():
    rich_view = auto_view(json_mode=False, stream=FakeTty())
    rich_view.close()
    assert isinstance(rich_view, RichProgress)
    assert isinstance(auto_view(json_mode=True, stream=FakeTty()), PlainProgress)
    assert isinstance(auto_view(json_mode=False, stream=io.StringIO()), PlainProgress)
