"""The ``app`` row of ``python -m falcon_core.bench speed``: the browser benchmark's figures
against issue 9's targets, or a clear reason why the row cannot run here."""

from __future__ import annotations

import subprocess

import pytest

from falcon_core.bench import speed


def test_the_figures_are_read_against_their_targets():
    """Worked by hand: the clicks' figure is the median of the repeats."""
    result = {"first_open_s": 8.6, "cold_s": [1.4, 0.9, 1.1], "warm_s": [0.2, 0.5, 0.25],
              "failures_s": 2.3, "load_average_before": [1.5, 1.2, 1.0], "cpus": 2,
              "features": [0, 1, 2]}
    row = speed.app_figures(result)
    assert row["first_open"]["seconds"] == 8.6 and row["first_open"]["met"] is True
    assert row["cold"]["seconds"] == 1.1 and row["cold"]["met"] is False
    assert (row["cold"]["min_s"], row["cold"]["max_s"], row["cold"]["n"]) == (0.9, 1.4, 3)
    assert row["warm"]["seconds"] == 0.25 and row["warm"]["met"] is True
    assert row["failures"]["seconds"] == 2.3 and row["failures"]["met"] is False
    assert row["failures"]["target_s"] == 2.0 and row["warm"]["target_s"] == 0.3
    assert row["all_met"] is False
    assert row["app_load_average_before"] == [1.5, 1.2, 1.0] and row["app_cpus"] == 2
    met = speed.app_figures({"first_open_s": 30.0, "cold_s": [1.0], "warm_s": [0.3],
                             "failures_s": 2.0})
    assert met["all_met"] is True  # a target is met at its limit


def test_the_row_is_skipped_with_its_reason_without_chromium(monkeypatch, tmp_path):
    missing = tmp_path / "no-chromium"
    monkeypatch.setenv("FALCON_CHROMIUM", str(missing))

    def no_run(*a, **k):
        raise AssertionError("the benchmark must not be started without a browser")

    monkeypatch.setattr(subprocess, "run", no_run)
    row = speed.row_app(None, 3)
    assert set(row) == {"skipped"}
    assert str(missing) in row["skipped"] and "apt-get install -y chromium" in row["skipped"]


def test_the_row_is_skipped_outside_a_checkout_of_the_app(tmp_path):
    why = speed.app_missing(tmp_path)
    assert why is not None and "app.py" in why


def test_the_row_is_registered_with_the_targets():
    what, target, fn = speed.ROWS["app"]
    assert fn is speed.row_app
    for t in ("30 s", "1 s", "0.3 s", "2 s"):
        assert t in target
