"""Issue 7's method choices, wired through the pipeline on the tests' tiny world: the
counterfactual rules, the spurious threshold on the CLIP's own scale, concept hygiene.

The models are random, so the concepts are noise; the tests check that each choice is applied
exactly as stated, against values recomputed here from the inputs (not from the code under test's
intermediate results)."""

from __future__ import annotations

import numpy as np
import pytest

from falcon_core.explanation import Explanation
from falcon_core.calibration import SCALE_SAMPLE
from falcon_core.settings import FalconSettings
from makers import tiny_falcon

AUTHORS = FalconSettings(high_rule="topk", top_k=8, low_rule="global", spurious_rule="absolute",
                         concept_hygiene=False)


@pytest.fixture(scope="module")
def falcon(tmp_path_factory):
    return tiny_falcon(tmp_path_factory.mktemp("method-world"), AUTHORS)


@pytest.fixture(scope="module")
def feature(falcon):
    for f in range(60):
        high = falcon.select_high(f)
        if len(falcon.select_low(f, high.indices, AUTHORS.replace(low_rule="quantile"))) >= 2:
            return f
    pytest.fail("no feature among the first 60 has counterfactual images")


def _vocabulary_shares(falcon):
    """Each word's share of the vocabulary's captions, counted caption by caption here."""
    caps = [falcon.vocabulary.caption(i) for i in range(len(falcon.vocabulary))]
    counts: dict[str, int] = {}
    for c in falcon.extractor.extract(caps):
        for w in c.words:
            counts[w] = counts.get(w, 0) + 1
    return {w: n / len(caps) for w, n in counts.items()}


def test_quantile_rule_in_the_pipeline(falcon, feature):
    s = AUTHORS.replace(low_rule="quantile", low_quantile=0.25)
    exp = falcon.explain(feature, s)
    Hn = falcon.normalized().astype(np.float64)
    eps = float(np.quantile(Hn[:, feature], 0.25))
    assert exp.low_selection["rule"] == "quantile"
    assert exp.low_selection["feature_thresholds"] == pytest.approx([eps], abs=1e-6)
    assert exp.low, "no counterfactual image"
    high = [r.index for r in exp.high]
    V = [j for j in range(Hn.shape[1]) if j != feature]
    h_mu = Hn[high][:, V].mean(axis=0)
    for r in exp.low:
        assert Hn[r.index, feature] <= eps + 1e-7
        assert r.similarity == pytest.approx(float(Hn[r.index, V] @ h_mu), abs=1e-5)
    # every candidate that passes beta and beats the last L image is in L (best first)
    cand = [j for j in range(len(Hn)) if j not in high and Hn[j, feature] <= eps + 1e-7
            and float(Hn[j, V] @ h_mu) >= s.beta]
    best = sorted(cand, key=lambda j: (-float(Hn[j, V] @ h_mu), j))[:s.max_low_images]
    assert [r.index for r in exp.low] == best


def test_twins_rule_in_the_pipeline(falcon, feature):
    s = AUTHORS.replace(low_rule="twins", twin_correlation=0.3)
    exp = falcon.explain(feature, s)
    Hn = falcon.normalized().astype(np.float64)
    r = np.array([np.corrcoef(Hn[:, feature], Hn[:, j])[0, 1] if Hn[:, j].std() > 0 else 0.0
                  for j in range(Hn.shape[1])])
    r[feature] = -np.inf
    twins = sorted(np.flatnonzero(r >= 0.3), key=lambda j: (-r[j], j))
    assert exp.low_selection["rule"] == "twins"
    assert exp.low_selection["twins"] == [int(t) for t in twins]
    eps = exp.low_selection["threshold"]
    assert eps == pytest.approx(float(Hn.mean()), abs=1e-6)
    W = [feature] + list(twins)
    V = [j for j in range(Hn.shape[1]) if j not in W]
    h_mu = Hn[[x.index for x in exp.high]][:, V].mean(axis=0)
    for rec in exp.low:  # low on the feature and on every twin; similar on the rest
        assert all(Hn[rec.index, j] < eps for j in W)
        assert rec.similarity == pytest.approx(float(Hn[rec.index, V] @ h_mu), abs=1e-5)


def test_relative_threshold_is_the_authors_value_on_this_clips_scale(falcon, feature):
    # the scale, recomputed here: the mean top-5 cosine of every probe image's whole view (the
    # tiny probe has fewer images than the sample) against every caption
    assert len(falcon.probe) <= SCALE_SAMPLE
    B = falcon.clip.encode_images([falcon.view(i) for i in range(len(falcon.probe))])
    caps = [falcon.vocabulary.caption(i) for i in range(len(falcon.vocabulary))]
    A = falcon.clip.encode_texts(caps)
    scale = float(np.sort(B @ A.T, axis=1)[:, -5:].mean())
    # a reference scale that puts the relative threshold among the observed L-scores, far from
    # the absolute 0.1, so the split shows which threshold was used
    loose = falcon.explain(feature, AUTHORS.replace(contrast=False, top_words=500))
    l_scores = sorted({c.l_score for c in loose.words if c.l_score > 0})
    assert len(l_scores) >= 2, "the counterfactual images share too few words with T"
    m = len(l_scores) // 2
    target = (l_scores[m - 1] + l_scores[m]) / 2  # no L-score sits at the threshold
    s = AUTHORS.replace(spurious_rule="relative", spurious_reference_scale=0.1 * scale / target,
                        top_words=500, top_phrases=500)
    exp = falcon.explain(feature, s)
    info = exp.low_selection["spurious"]
    assert info["rule"] == "relative" and info["scale_images"] == len(falcon.probe)
    assert info["caption_scale"] == pytest.approx(scale, abs=1e-3)
    assert info["threshold"] == pytest.approx(target, rel=1e-3)  # 0.1 x scale / reference
    assert "0.1" in info["description"] and "scale" in info["description"]
    # the split follows that threshold: at or above it removed, below it kept
    by_l = {c.text: c.l_score for c in loose.words}
    removed = {c.text for c in exp.spurious_words}
    assert removed == {w for w, l in by_l.items() if l >= target}
    assert {c.text for c in exp.words} == {w for w, l in by_l.items() if l < target}
    assert removed
    # recorded in the JSON the app reads
    back = Explanation.from_json(exp.to_json())
    assert back.low_selection["spurious"]["threshold"] == pytest.approx(info["threshold"])
    # the absolute rule ignores the scale
    absolute = falcon.explain(feature, s.replace(spurious_rule="absolute"))
    assert absolute.low_selection["spurious"]["threshold"] == 0.1


def test_ratio_rule_removes_by_each_concepts_own_t_score(falcon, feature):
    """spurious_rule="ratio": removed iff L-score > 0 and L-score >= (0.1 / reference) x T-score,
    checked against the T- and L-scores of the explanation without removal."""
    loose = falcon.explain(feature, AUTHORS.replace(contrast=False, top_words=500))
    assert loose.low, "no counterfactual images"
    # with contrast off nothing is removed, and the L-scores are still recorded
    pairs = {c.text: (c.score, c.l_score) for c in loose.words}
    ratios = sorted({l / t for t, l in pairs.values() if l > 0 and t > 0})
    assert len(ratios) >= 2, "the counterfactual images share too few words with T"
    m = len(ratios) // 2
    share = (ratios[m - 1] + ratios[m]) / 2  # no concept sits at the share
    s = AUTHORS.replace(spurious_rule="ratio", spurious_reference_scale=0.1 / share,
                        top_words=500, top_phrases=500)
    exp = falcon.explain(feature, s)
    info = exp.low_selection["spurious"]
    assert info["rule"] == "ratio" and info["threshold"] is None
    assert info["share"] == pytest.approx(share)
    removed = {c.text for c in exp.spurious_words}
    assert removed == {w for w, (t, l) in pairs.items() if l > 0 and l >= share * t}
    assert {c.text for c in exp.words} == {w for w, (t, l) in pairs.items()
                                           if not (l > 0 and l >= share * t)}
    assert removed and exp.words
    # not the absolute rule: some removed concept is below 0.1 or some kept one above it
    absolute_removed = {w for w, (t, l) in pairs.items() if l >= 0.1}
    assert absolute_removed != removed


def test_hygiene_drops_the_words_of_most_captions(falcon, feature):
    shares = _vocabulary_shares(falcon)
    share = 0.4  # the shape words are in 12 or 13 of the 26 captions
    frequent = {w for w, x in shares.items() if x > share}
    assert frequent, "the tiny vocabulary has no word above the share"
    loose = falcon.explain(feature, AUTHORS.replace(contrast=False, top_words=500))
    s = AUTHORS.replace(contrast=False, top_words=500, concept_hygiene=True,
                        max_document_frequency=share)
    exp = falcon.explain(feature, s)
    words_t = {c.text for c in loose.words}
    dropped = {d["text"]: d for d in exp.hygiene["dropped_words"]}
    assert set(dropped) == words_t & frequent
    assert dropped, "no word of T's captions was frequent"
    for w, d in dropped.items():
        assert d["document_frequency"] == pytest.approx(shares[w])
        assert d["score"] == pytest.approx(loose.all_word_scores[w])
    assert {c.text for c in exp.words} == words_t - frequent
    assert exp.hygiene["enabled"] and exp.hygiene["max_document_frequency"] == share
    assert exp.hygiene["captions_counted"] == len(falcon.vocabulary)
    assert Explanation.from_json(exp.to_json()).hygiene == exp.hygiene
    # turned off: nothing dropped, everything kept
    off = falcon.explain(feature, s.replace(concept_hygiene=False))
    assert off.hygiene == {"enabled": False}
    assert {c.text for c in off.words} == words_t


def test_crop_embeddings_are_keyed_by_the_boxes(falcon, feature):
    """Two crop rules on the same CAMs must not share cached crop embeddings."""
    from falcon_core.stages.crops import CropBox

    ex = falcon.explainer
    high = falcon.select_high(feature)
    feats = falcon.features(feature)
    cams = ex._cams(feats, high.indices)
    boxes = ex._boxes(cams, 0.6)
    whole = [CropBox(0, 0, c.shape[1], c.shape[0]) for c in cams]
    key = ex._cams_key(feats, high.indices)
    a = ex._crop_embeddings(high.indices, boxes, key, 0.6)
    b = ex._crop_embeddings(high.indices, whole, key, 0.6)
    views = falcon.clip.encode_images([falcon.view(i) for i in high.indices])
    assert np.allclose(b, views, atol=1e-5)
    assert any(bx.as_tuple() != w.as_tuple() for bx, w in zip(boxes, whole))
    assert not np.allclose(a, b, atol=1e-4)


def test_view_embeddings_are_the_clip_embeddings_of_the_views(falcon):
    idx = [0, 5, 17]
    expected = falcon.clip.encode_images([falcon.view(i) for i in idx])
    views = falcon.view_embeddings()
    assert views.shape == (len(falcon.probe), falcon.clip.embed_dim)
    assert np.allclose(views[idx], expected, atol=1e-5)
    # counterfactual images are now looked up there, with the same values
    assert np.allclose(falcon.explainer._whole_embeddings(idx), expected, atol=1e-5)


def test_clip_rule_in_the_pipeline(falcon, feature):
    """L = the images at or below the feature's 0.25-quantile, nearest (cosine) in the CLIP's
    image space to the mean direction of T's *crops*: recomputed here from the views' embeddings
    and the crops cut from the boxes the explanation reports (feeding it T's whole views instead,
    or ranking by the backbone, picks other images)."""
    from falcon_core.stages.crops import CropBox, crop_image

    s = AUTHORS.replace(low_rule="clip", low_quantile=0.25)
    exp = falcon.explain(feature, s)
    assert exp.low_selection["rule"] == "clip" and exp.low, "no counterfactual image"
    Hn = falcon.normalized().astype(np.float64)
    eps = float(np.quantile(Hn[:, feature], 0.25))
    high = [r.index for r in exp.high]
    crops = [crop_image(falcon.explainer.store.view(r.index), CropBox(*r.box), falcon.clip.image_size)
             for r in exp.high]
    B = np.asarray(falcon.clip.encode_images(crops), dtype=np.float64)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    ref = B.mean(axis=0)
    ref /= np.linalg.norm(ref)
    V = np.asarray(falcon.view_embeddings(), dtype=np.float64)
    cos = (V @ ref) / np.linalg.norm(V, axis=1)
    cand = [j for j in range(len(Hn)) if j not in high and Hn[j, feature] <= eps + 1e-7]
    assert exp.low_selection["n_candidates"] == len(cand)
    want = sorted(cand, key=lambda j: (-cos[j], j))[:s.max_low_images]
    got = [r.index for r in exp.low]
    assert [r.similarity for r in exp.low] == pytest.approx([cos[j] for j in got], abs=1e-4)
    assert sorted(got) == sorted(want) or min(cos[got]) >= max(cos[j] for j in cand
                                                                 if j not in got) - 1e-5
    # the T-view reference would not give this L (else the test could not tell them apart)
    Vh = V[high] / np.linalg.norm(V[high], axis=1, keepdims=True)
    rv = Vh.mean(axis=0) / np.linalg.norm(Vh.mean(axis=0))
    cos_v = (V @ rv) / np.linalg.norm(V, axis=1)
    assert sorted(cand, key=lambda j: (-cos_v[j], j))[:s.max_low_images] != want


def test_clip_rule_without_the_crops_reads_the_same_crops(falcon, feature):
    """``select_low`` called on its own (as a precompute does, before any explanation) finds T's
    crop rows itself: they must be the crops ``explain`` made, with the same threshold and margin,
    so both pick the same L."""
    s = AUTHORS.replace(low_rule="clip", low_quantile=0.25, cam_box_margin=2.0)
    exp = falcon.explain(feature, s)
    high = [r.index for r in exp.high]
    alone = falcon.explainer.select_low(feature, high, s)
    assert [int(i) for i in alone.indices] == [r.index for r in exp.low]


def _named_in_views(falcon, k):
    """Per valid probe image, the words and phrases of its top-k captions, its whole view seen by
    the CLIP: recomputed here by brute force (every caption's cosine), not with the pipeline's
    search."""
    _, valid = falcon.representations()
    images = np.flatnonzero(valid)
    V = np.asarray(falcon.view_embeddings(), dtype=np.float64)[images]
    A = np.asarray(falcon.text_embeddings()[:], dtype=np.float64)
    top = np.argsort(-(V @ A.T), axis=1, kind="stable")[:, :k]
    caps = [falcon.extractor.extract([falcon.vocabulary.caption(int(j)) for j in row])
            for row in top]
    return (images, [set().union(*(c.words for c in row)) for row in caps],
            [set().union(*(c.phrases for c in row)) for row in caps])


def test_view_naming_is_what_the_views_top_captions_hold(falcon):
    images, words, phrases = _named_in_views(falcon, AUTHORS.captions_per_image)
    naming = falcon.explainer.view_naming(AUTHORS)
    assert naming.images.tolist() == images.tolist()
    for got, want in ((naming.words, words), (naming.phrases, phrases)):
        every = set().union(*want)
        assert set(got) == every and every
        for w in every:
            assert got[w].tolist() == [i for i, ws in enumerate(want) if w in ws]
    # another k names other concepts (the key holds k)
    assert falcon.explainer.view_naming(AUTHORS.replace(captions_per_image=1)).words != naming.words


def test_conditional_rule_in_the_pipeline(falcon, feature, monkeypatch):
    """spurious_rule="conditional" wired through the explainer: the anchor is the top word whose
    naming best separates the feature's (normalised) activation, and a word is removed iff,
    among the anchor's images, its AUC is below 0.5 + share × (the anchor's AUC among the images
    without it − 0.5); a word with fewer than two images on a side is kept. The tiny world's
    random CLIP names the same captions in every view, so the naming is made here (seeded): the
    anchor follows the activation, two words follow it among the anchor's images, the rest are
    coin flips, one is named on a random half of the anchor's images (a planted correlation the
    feature ignores); every AUC is sklearn's."""
    from sklearn.metrics import roc_auc_score

    from falcon_core.stages.contrast import Naming

    share = 0.1 / 0.3
    s = AUTHORS.replace(spurious_rule="conditional", top_words=500, top_phrases=500)
    loose = falcon.explain(feature, s.replace(contrast=False))
    t_words = [c.text for c in loose.words]
    assert len(t_words) >= 5, "too few words to test"
    _, valid = falcon.representations()
    images = np.flatnonzero(valid)
    act = falcon.normalized().astype(np.float64)[images, feature]
    rng = np.random.default_rng(0)
    high = act > np.median(act)
    noise = rng.random(len(images))
    cols = {t_words[1]: high | (noise < 0.1)}  # the anchor (not the top word by T-score)
    above = act > np.median(act[high])
    cols[t_words[0]] = cols[t_words[1]] & (above | (noise > 0.8)) | (noise < 0.05)  # encoded
    cols[t_words[2]] = above | (noise > 0.9)  # encoded too
    for w in t_words[3:]:
        cols[w] = rng.random(len(images)) < 0.5  # ignored
    # named on half of the anchor's images, at random: planted on the anchor, ignored given it
    cols[t_words[3]] = cols[t_words[1]] & (rng.random(len(images)) < 0.5)
    cols[t_words[-1]] = np.zeros(len(images), bool)  # never named: undecided, kept
    naming = Naming(images=images, words={w: np.flatnonzero(c) for w, c in cols.items()},
                    phrases={})
    monkeypatch.setattr(falcon.explainer, "view_naming", lambda settings=None: naming)
    exp = falcon.explainer._explain((feature,), s)  # not cached: the naming is this test's

    def auc(y, x):
        return roc_auc_score(y, x) if 2 <= y.sum() <= len(y) - 2 else None

    aucs = {w: auc(cols[w], act) for w in t_words}
    anchor = max((w for w in t_words if aucs[w] is not None),
                 key=lambda w: (aucs[w], -t_words.index(w)))
    info = exp.low_selection["spurious"]
    assert anchor == t_words[1] and info["anchor"] == anchor
    assert info["anchor_auc"] == pytest.approx(aucs[anchor], abs=1e-6)
    a = cols[anchor]
    want = set()
    for w in t_words:
        d = cols[w]
        given, control = auc(d[a], act[a]), auc(a[~d], act[~d])
        if w != anchor and given is not None and control is not None \
                and given < 0.5 + share * (control - 0.5):
            want.add(w)
    removed = {c.text for c in exp.spurious_words}
    assert removed == want
    assert {c.text for c in exp.words} == set(t_words) - want
    assert {t_words[0], t_words[2], t_words[-1]} <= {c.text for c in exp.words}
    assert t_words[3] in removed, "the planted word was kept"
    # the decisions are the conditional ones: over every image (no conditioning) they differ
    unconditioned = {w for w in t_words if w != anchor and aucs[w] is not None
                     and aucs[w] < 0.5 + share * (aucs[anchor] - 0.5)}
    assert unconditioned != want
