"""A rate or mean short of 1 never prints as 1 (24,999 successes in 25,000 are not "100.0%"), nor one
above 0 as 0: the run summary, the score table and pass^k add decimals where rounding would."""

from __future__ import annotations

import io

from rich.console import Console

from simworld.commands.score import score_table
from simworld.errors import rounded
from simworld.summary import EpisodeStats, RunSummary, pass_k_text


def test_rounded_adds_places_only_where_rounding_would_reach_a_bound():
    assert rounded(0.99996, 1, 100) == "99.996" and rounded(0.00004, 1, 100) == "0.004"
    assert rounded(1.0, 1, 100) == "100.0" and rounded(0.0, 1, 100) == "0.0" and rounded(0.5, 1, 100) == "50.0"
    assert rounded(0.99996, 3) == "0.99996" and rounded(0.9994, 3) == "0.999" and rounded(2.0, 3) == "2.000"
    assert rounded(1 - 1e-8, 1, 100) == "99.999999" and rounded(1e-9, 1, 100) == "0.0000001"


def _render(table) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    return out.getvalue()


def test_run_summary_and_score_table_do_not_round_a_failure_away():
    summary = RunSummary()
    for i in range(25_000):
        summary.add(EpisodeStats(i, i != 7, "user_stop", 1, 2, 0, 0, None, None, ()))
    out = io.StringIO()
    summary.render(Console(file=out, width=200, color_system=None))
    assert "24,999 / 25,000 (99.996%)" in out.getvalue()
    row = {"episodes": 25_000, "success_rate": 0.99996, "pass_rate": 0.99996, "mean_value": 0.99996,
           "scorers": {"state_match": 0.99996, "outputs_stated": 1.0}}
    text = _render(score_table({"rows": [{"task_type": "cancel", "agent": "oracle", **row}], "total": row})[0])
    assert "99.996%" in text and "0.99996" in text and "100.0%" not in text and "1.000 " in text


def test_pass_k_text_keeps_a_short_pass_rate_short_of_one():
    values, _ = pass_k_text({"pass^1": 0.99996, "pass^2": 1.0}, {}, 25_000)
    assert values == "pass^1 0.99996, pass^2 1.000"
