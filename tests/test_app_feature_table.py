"""The feature table (the explorer's list of features explained so far) is kept up to date by
reading only what changed in the cache (issue 9: a never-seen feature used to re-read every
explanation of the workspace to add one row)."""

from __future__ import annotations

import pytest

from falcon_core.settings import FalconSettings

TOPK = FalconSettings(high_rule="topk", top_k=6, low_rule="global", spurious_rule="absolute")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from falcon_core.pipeline import Falcon
    from makers import make_tiny_world, tiny_config

    world = make_tiny_world(tmp_path_factory.mktemp("table"))
    return Falcon.from_config(tiny_config(world), settings=TOPK,
                              cache_dir=str(world["base"] / "cache"))


def _counting_reads(falcon, monkeypatch) -> list[int]:
    reads: list[int] = []
    original = falcon.cached_explanation

    def counted(features, settings=None):
        reads.append(int(features))
        return original(features, settings)

    monkeypatch.setattr(falcon, "cached_explanation", counted)
    return reads


def test_the_table_adds_the_new_explanation_and_reads_only_it(tiny, monkeypatch):
    from ui.loaders import ExplainedFeatures, explanations_stamp

    held = ExplainedFeatures(tiny, TOPK)
    reads = _counting_reads(tiny, monkeypatch)
    assert len(held.table(explanations_stamp(tiny))) == 0
    exps = {f: tiny.explain(f, settings=TOPK) for f in (3, 1)}
    reads.clear()
    table = held.table(explanations_stamp(tiny))
    assert sorted(reads) == [1, 3]
    # the rows say what the explanations say (read here by hand, not by the table's code)
    rows = {r["feature"]: r for r in table.to_dict("records")}
    assert sorted(rows) == [1, 3]
    stats = tiny.feature_stats(TOPK)
    for f, exp in exps.items():
        assert rows[f]["coherence"] == pytest.approx(round(exp.coherence, 4))
        assert rows[f]["top concepts"] == ", ".join(exp.top_concepts(4))
        assert rows[f]["high images"] == len(exp.high)
        assert rows[f]["max activation"] == pytest.approx(round(float(stats["max"][f]), 4))
    coh = [r["coherence"] for r in table.to_dict("records")]
    assert coh == sorted(coh, reverse=True)  # best coherence first

    # one more feature explained: only it is read
    tiny.explain(0, settings=TOPK)
    reads.clear()
    table = held.table(explanations_stamp(tiny))
    assert reads == [0]
    assert sorted(table["feature"]) == [0, 1, 3]
    # nothing changed: nothing is read
    reads.clear()
    assert held.table(explanations_stamp(tiny)) is table and reads == []


def test_a_removed_explanation_leaves_the_table(tiny):
    from ui.loaders import ExplainedFeatures, explanations_stamp

    tiny.explain(2, settings=TOPK)
    held = ExplainedFeatures(tiny, TOPK)
    assert 2 in set(held.table(explanations_stamp(tiny))["feature"])
    tiny.cache.path("explanations", tiny.explanation_key(2, TOPK), ".json").unlink()
    assert 2 not in set(held.table(explanations_stamp(tiny))["feature"])
    # the library's own list agrees
    assert sorted(held.table(explanations_stamp(tiny))["feature"]) == sorted(tiny.explained(TOPK))
