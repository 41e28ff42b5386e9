"""The faithfulness score (issue 12): hand-computed values on small arrays, and its wiring into
the explainer (whole views of the whole probe set, the explained feature's activation, k)."""

import math

import numpy as np
import pytest

from falcon_core.stages import faithfulness as F


# ------------------------------------------------------------------------- the arithmetic
def test_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.8, 0.1: pairs won 0.9>0.8, 0.9>0.1, 0.4>0.1 -> 3 of 4
    assert F.roc_auc([0.9, 0.8, 0.1, 0.4], [True, False, False, True]) == pytest.approx(0.75)
    # a tie counts half: (1 vs 1) 0.5 + (1 vs 0) 1 -> 1.5 of 2
    assert F.roc_auc([1.0, 1.0, 0.0], [True, False, False]) == pytest.approx(0.75)
    assert F.roc_auc([3, 2, 1], [True, True, False]) == 1.0
    assert F.roc_auc([1, 2, 3], [True, True, False]) == 0.0
    assert math.isnan(F.roc_auc([1, 2], [True, True]))


def test_ranks_and_spearman_by_hand():
    assert F.rankdata([10, 30, 20, 30]).tolist() == [1.0, 3.5, 2.0, 3.5]
    # Spearman's rho of a similarity row against the activation (score_rows' .spearman):
    # y ranks 1,2,4,3: d = 0,0,-1,1, sum d^2 = 2, rho = 1 - 6*2 / (4*15) = 0.8
    assert F.score_rows([[1, 2, 3, 4]], [10, 20, 40, 30], 1)[0].spearman == pytest.approx(0.8)
    assert F.score_rows([[1, 2, 3]], [3, 2, 1], 1)[0].spearman == pytest.approx(-1.0)
    assert math.isnan(F.score_rows([[1, 1, 1]], [1, 2, 3], 1)[0].spearman)


def test_rank_rows_ranks_each_row_with_ties_averaged_by_hand():
    X = np.array([[10.0, 30.0, 20.0, 30.0],
                  [5.0, 5.0, 5.0, 1.0],
                  [4.0, 3.0, 2.0, 1.0],
                  [2.0, np.nan, 1.0, 2.0]])
    R = F.rank_rows(X)
    assert R[0].tolist() == [1.0, 3.5, 2.0, 3.5]
    assert R[1].tolist() == [3.0, 3.0, 3.0, 1.0]  # three tied at ranks 2, 3, 4 -> 3
    assert R[2].tolist() == [4.0, 3.0, 2.0, 1.0]
    assert R[3].tolist() == [2.5, 4.0, 1.0, 2.5]  # NaN last, as a sort puts it
    assert F.rank_rows(np.zeros((2, 0))).shape == (2, 0)
    assert F.rankdata([7.0]).tolist() == [1.0]


def test_score_rows_scores_each_row_by_hand():
    act = [5.0, 1.0, 2.0, 3.0]
    sims = np.array([[0.75, 0.25, 0.65, 0.1],   # test_score_by_hand's: AUC 0.75, rho 0.4
                     [0.1, 0.2, 0.3, 0.4],      # top 2: images 3, 2 (act 3, 2) vs 0, 1 (5, 1)
                     [4.0, 1.0, 2.0, 3.0]])     # the activation itself
    a, b, c = F.score_rows(sims, act, k=2)
    assert (a.auc, a.spearman, a.k, a.n) == (pytest.approx(0.75), pytest.approx(0.4), 2, 4)
    # pairs (3 vs 5) lost, (3 vs 1) won, (2 vs 5) lost, (2 vs 1) won: 2 of 4
    # ranks of sims 1,2,3,4; of act 4,1,2,3: d = -3,1,1,1, sum d^2 = 12, rho = 1 - 72/60
    assert (b.auc, b.spearman) == (pytest.approx(0.5), pytest.approx(-0.2))
    assert (c.auc, c.spearman) == (1.0, pytest.approx(1.0))
    # image 3 left out: each row scored over images 0-2 (act 5, 1, 2); top 1 of row b is
    # image 2 (act 2): it beats image 1, loses to image 0 -> 0.5
    a, b, c = F.score_rows(sims, act, k=1, valid=[True, True, True, False])
    assert (a.auc, b.auc, c.auc, a.n) == (1.0, 0.5, 1.0, 3)
    # a constant row has no rank correlation; too few images: NaN, k cut to all but one
    flat, = F.score_rows(np.ones((1, 4)), act, k=2)
    assert math.isnan(flat.spearman) and flat.auc == pytest.approx(0.5)  # top 2: images 0, 1
    none, = F.score_rows(np.ones((1, 1)), [1.0], k=3)
    assert math.isnan(none.auc) and (none.k, none.n) == (0, 1)
    assert F.score_rows(np.zeros((0, 4)), act, k=2) == []


def _scalar_rank(x):
    """Average ranks the plain way (sorted, runs of equal values walked one by one): the
    reference for rank_rows, not the code under test."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _scalar_score(sim, act, k, valid):
    """The AUC and Spearman's rho of one row, each sum over one 1-D array as the per-concept
    code took it before :func:`F.score_rows` (the reference for its bits)."""
    x, y = np.asarray(sim, float)[valid], np.asarray(act, float)[valid]
    n = len(x)
    top = np.argsort(-x, kind="stable")[:k]
    pos = np.zeros(n, bool)
    pos[top] = True
    ry = _scalar_rank(y)
    auc = float((ry[pos].sum() - k * (k + 1) / 2.0) / (k * (n - k)))
    rx = _scalar_rank(x)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return auc, (math.nan if den == 0 else float((rx * ry).sum() / den))


def test_score_rows_equals_score_one_row_at_a_time_bit_for_bit():
    # what the explainer relies on: a concept scored with others gets its own bits; the values
    # here are not exact in float64, ties and NaN included
    rng = np.random.default_rng(3)
    n = 1000
    sims = rng.normal(size=(7, n))
    sims[1, ::3] = sims[1, 0]  # ties in one row
    sims[2, 5] = np.nan
    sims[3] = 0.25  # constant
    sims[4] = np.round(sims[4], 1)  # many ties
    act = np.round(rng.normal(size=n), 2)  # ties in the activation
    valid = rng.random(n) > 0.1
    got = F.score_rows(sims, act, k=37, valid=valid)
    for row, g in zip(sims, got):
        want = F.score(row, act, 37, valid)  # the row alone
        auc, rho = _scalar_score(row, act, 37, valid)
        assert g.auc == want.auc == auc
        assert (g.spearman == want.spearman == rho) or \
            (math.isnan(g.spearman) and math.isnan(want.spearman) and math.isnan(rho))
        assert (g.k, g.n) == (want.k, want.n) == (37, int(valid.sum()))


def test_k_is_the_size_of_T_at_least_one_percent():
    assert F.choose_k(5000, 20) == 50  # 1 % of 5000 beats |T| = 20
    assert F.choose_k(1000, 20) == 20
    assert F.choose_k(10, 20) == 9  # all but one: there must be a negative
    assert F.choose_k(1, 5) == 0


def test_concept_similarity_is_the_word_score_weighted_mean_cosine():
    views = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    concepts = np.array([[1.0, 0.0], [0.0, 1.0]])
    # weights 3:1 -> 0.75 cos(t0) + 0.25 cos(t1)
    sim = F.concept_similarity(views, concepts, [3.0, 1.0])
    assert sim == pytest.approx([0.75, 0.25, 0.75 * 0.6 + 0.25 * 0.8])
    assert F.concept_similarity(views, concepts) == pytest.approx([0.5, 0.5, 0.7])
    assert F.concept_similarity(views, concepts, [0.0, 0.0]) == pytest.approx([0.5, 0.5, 0.7])
    with pytest.raises(ValueError):
        F.concept_similarity(views, concepts, [1.0])


def test_score_by_hand():
    sim = [0.75, 0.25, 0.65, 0.1]
    act = [5.0, 1.0, 2.0, 3.0]
    s = F.score(sim, act, k=2)
    # top 2 by similarity: images 0 and 2 (activations 5, 2) vs 1 and 3 (1, 3): 3 of 4 pairs
    assert s.auc == pytest.approx(0.75)
    # similarity ranks 4,2,3,1; activation ranks 4,1,2,3: sum d^2 = 6, rho = 1 - 36/60
    assert s.spearman == pytest.approx(0.4)
    assert (s.k, s.n) == (2, 4)
    # image 3 left out (unreadable): top 2 of 0,1,2 are 0 and 2 vs 1 -> 2 of 2
    s = F.score(sim, act, k=2, valid=[True, True, True, False])
    assert (s.auc, s.n) == (1.0, 3)
    # a tie at the k-th place goes to the lower index: image 0 (activation 1) is the positive
    assert F.score([0.5, 0.5, 0.1], [1.0, 2.0, 0.0], k=1).auc == pytest.approx(0.5)
    assert math.isnan(F.score([0.5], [1.0], k=1).auc)


def test_a_concept_that_picks_the_feature_scores_high_one_that_does_not_scores_half():
    rng = np.random.default_rng(0)
    n = 400
    star = rng.random(n) < 0.2  # images showing the concept
    views = rng.normal(size=(n, 8))
    views[:, 0] += 4.0 * star  # the concept's direction is dimension 0 (rows left unscaled so
    # that the other dimensions stay independent of the concept)
    act = star * 1.0 + 0.1 * rng.normal(size=n)  # the feature fires on the concept
    concepts = np.eye(8)[[0, 5]]  # "star", and an unrelated direction
    good, unrelated = F.concept_scores(views, concepts, act, k=40)
    assert good.auc > 0.9 and good.spearman > 0.4
    assert abs(unrelated.auc - 0.5) < 0.15 and abs(unrelated.spearman) < 0.15


# ------------------------------------------------------------------------- the wiring
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from falcon_core.pipeline import Falcon
    from falcon_core.settings import FalconSettings
    from makers import make_tiny_world, tiny_config

    world = make_tiny_world(tmp_path_factory.mktemp("faithful-world"))
    return Falcon.from_config(tiny_config(world), settings=FalconSettings(high_rule="topk", top_k=5),
                              cache_dir=str(world["base"] / "cache"))


def _pairwise_auc(act, positive):
    pos, neg = act[positive], act[~positive]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def test_the_explanation_scores_whole_views_against_the_explained_feature(tiny):
    feature = 7
    exp = tiny.explain(feature)
    f = exp.faithfulness
    assert f is not None and f.kept is not None
    _, valid = tiny.representations()
    n = int(valid.sum())
    assert f.kept.n_images == n
    assert f.kept.k == max(len(exp.high), math.ceil(0.01 * n))  # |T| = 5 > 1 % of 32
    assert f.kept.concepts == list(dict.fromkeys(
        c.text for c in exp.words[:3] + exp.phrases[:3]))
    # recomputed here from the whole views (not the crops) and the feature's own activation
    views = tiny.explainer.clip.encode_images([tiny.view(i) for i in range(n)])
    act = np.asarray(tiny.normalized(True))[:, feature]
    concept = exp.words[0].text
    t = tiny.explainer.clip.encode_texts([concept])[0]
    top = np.argsort(-(views @ t), kind="stable")[:f.kept.k]
    positive = np.zeros(n, dtype=bool)
    positive[top] = True
    assert f.per_concept[concept] == pytest.approx(_pairwise_auc(act, positive), abs=1e-6)
    # the kept concepts together: the Word-Score-weighted mean cosine picks the top k
    T = tiny.explainer.clip.encode_texts(f.kept.concepts)
    w = np.asarray(f.kept.weights, dtype=np.float64)
    sim = (views @ T.T) @ (w / w.sum())
    top = np.argsort(-sim, kind="stable")[:f.kept.k]
    positive = np.zeros(n, dtype=bool)
    positive[top] = True
    assert f.kept.auc == pytest.approx(_pairwise_auc(act, positive), abs=1e-6)
    # every shown concept, kept and removed, has its own score
    shown = {c.text for c in exp.words + exp.phrases + exp.spurious_words + exp.spurious_phrases}
    assert set(f.per_concept) == shown
    # and the JSON round trip keeps it
    from falcon_core.explanation import Explanation

    back = Explanation.from_json(exp.to_json())
    assert back.faithfulness == f


def test_the_cache_key_holds_the_score_version(tiny, monkeypatch):
    from falcon_core.stages import faithfulness

    before = tiny.explanation_key(7)
    monkeypatch.setattr(faithfulness, "VERSION", faithfulness.VERSION + 1)
    assert tiny.explanation_key(7) != before


def test_benchmark_validation_by_hand():
    from falcon_core.bench.faithfulness import validate

    rows = [{"hit": True, "faithfulness_auc": 0.9, "faithfulness_spearman": 0.3},
            {"hit": True, "faithfulness_auc": 0.8, "faithfulness_spearman": 0.2},
            {"hit": False, "faithfulness_auc": 0.85, "faithfulness_spearman": 0.1},
            {"hit": False, "faithfulness_auc": 0.5, "faithfulness_spearman": 0.0},
            {"hit": False, "faithfulness_auc": None, "faithfulness_spearman": None}]  # no score
    v = validate(rows)
    # hits 0.9, 0.8 vs misses 0.85, 0.5: 0.9 wins twice, 0.8 once -> 3 of 4
    assert v["auc"]["separation_auc"] == pytest.approx(0.75)
    assert (v["auc"]["with_truth"], v["auc"]["without_truth"]) == (2, 2)
    assert v["auc"]["mean_with_truth"] == pytest.approx(0.85)
    assert v["passes"] is False  # below 0.8
    assert v["spearman"]["separation_auc"] == 1.0
    rows[1]["faithfulness_auc"] = 0.95
    assert validate(rows)["passes"] is True  # 4 of 4


def test_the_score_as_text_for_the_cli_the_badge_and_the_report():
    from types import SimpleNamespace

    from falcon_core import faithfulness_view as V
    from falcon_core.explanation import Faithfulness, FaithfulnessScore

    kept = FaithfulnessScore(["star", "a <red> star"], [0.6, 0.3], 0.934, 0.41, 50, 5000)
    removed = FaithfulnessScore(["grass"], [0.5], 0.712, 0.2, 50, 5000)
    exp = SimpleNamespace(faithfulness=Faithfulness(kept, removed, {"star": 0.95}, "how"))
    assert V.summary_line(exp) == ("faithfulness: AUC 0.93 (high), ρ 0.41 (top 50 of 5000 probe "
                                   "images by star, a <red> star); removed concepts: AUC 0.71")
    assert V.badge(exp)[:2] == ("faithfulness 0.93", "green")
    assert V.concept_auc(exp, "star") == "0.95" and V.concept_auc(exp, "blue") == "–"
    html = V.report_html(exp)
    assert "&lt;red&gt;" in html and "<red>" not in html and "faithfulness 0.93 (high)" in html
    assert [V.level(x) for x in (0.95, 0.9, 0.8, 0.69, None)] == ["high", "high", "medium", "low",
                                                                 "n/a"]
    assert V.summary_line(SimpleNamespace(faithfulness=None)).endswith("older version)")
