"""`python -m falcon_core.bench speed`'s options reach its rows (no row is timed here)."""

from falcon_core.bench import speed


def _names_and_options(monkeypatch, argv):
    seen = {}

    def fake_run(names, repeat, log=print, **options):
        seen["names"], seen["options"] = list(names), options
        return {"rows": {}, "peak_rss_mb": 0.0, "note": ""}

    monkeypatch.setattr(speed, "run", fake_run)
    assert speed.main(argv) == 0
    return seen["names"], seen["options"]


def test_the_search_rows_run_by_default_and_no_search_leaves_them_out(monkeypatch):
    names, _ = _names_and_options(monkeypatch, [])
    assert {"search_exact", "search_ivfpq", "precompute"} <= set(names)
    names, _ = _names_and_options(monkeypatch, ["--no-search"])
    assert "precompute" in names and not set(speed.SEARCH_ROWS) & set(names)
    names, _ = _names_and_options(monkeypatch, ["--only", "search_ivfpq,precompute", "--no-search"])
    assert names == ["precompute"]


def test_features_and_search_places_reach_the_rows(monkeypatch):
    _, options = _names_and_options(monkeypatch, [
        "--only", "precompute", "--features", "128", "--index-cache", "/x/ivf",
        "--search-data", "/x/data", "--search-rows", "1000"])
    assert options == {"features": 128, "index_cache": "/x/ivf", "search_data": "/x/data",
                       "search_rows": 1000}

