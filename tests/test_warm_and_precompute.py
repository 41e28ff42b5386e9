"""Issue 9: warm is warm (no weights hashed again, no spaCy loaded for a cached explanation) and
the whole-layer precompute shares GradCAM and CLIP work across features with the same results."""

import os

import numpy as np
import pytest
import torch

from falcon_core import cache as cache_mod
from falcon_core.cache import file_digest, hash_file
from falcon_core.pipeline import Falcon
from falcon_core.settings import FalconSettings
from makers import make_tiny_world, tiny_config

TOPK = FalconSettings(high_rule="topk", top_k=6)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("warm-world"))


def test_file_digest_is_stored_and_follows_the_file(tmp_path, monkeypatch):
    f = tmp_path / "weights.pt"
    f.write_bytes(b"a" * 1000)
    root = tmp_path / "cache"
    assert file_digest(f, root) == hash_file(f)

    def boom(path, *a, **k):
        raise AssertionError("hashed again")

    monkeypatch.setattr(cache_mod, "hash_file", boom)
    assert file_digest(f, root) == cache_mod.hashlib.sha256(b"a" * 1000).hexdigest()
    monkeypatch.undo()

    # same size, mtime set back: the contents changed, so the digest must too
    st = os.stat(f)
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_digest(f, root) == hash_file(f) != cache_mod.hashlib.sha256(b"a" * 1000).hexdigest()
    # replaced by another file (new inode)
    g = tmp_path / "other.pt"
    g.write_bytes(b"c" * 1000)
    os.replace(g, f)
    assert file_digest(f, root) == cache_mod.hashlib.sha256(b"c" * 1000).hexdigest()


def test_a_stored_digest_of_another_identity_is_not_used(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"x" * 10)
    root = tmp_path / "cache"
    file_digest(f, root)
    c = cache_mod.DiskCache(root)
    key = cache_mod.hash_json(cache_mod.file_identity(f))
    ident = cache_mod.file_identity(f)
    c.write_json(cache_mod.FILE_DIGESTS, key, {"identity": {**ident, "size": 11},
                                              "sha256": "0" * 64})
    assert file_digest(f, root) == hash_file(f)


def test_hash_state_dict_follows_every_weight():
    from falcon_core.models.checkpoints import hash_state_dict

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    b.load_state_dict(a.state_dict())
    assert hash_state_dict(a) == hash_state_dict(b)
    with torch.no_grad():
        b[1].bias[1] += 1e-6
    assert hash_state_dict(a) != hash_state_dict(b)


def test_concept_fingerprint_without_loading_spacy():
    from falcon_core.stages.concepts import ConceptExtractor

    fast = ConceptExtractor()
    fp = fast.fingerprint
    assert fast._nlp is None  # not loaded
    loaded = ConceptExtractor()
    loaded.nlp
    assert loaded.fingerprint == fp
    fast.nlp  # loading afterwards agrees with what the fingerprint said
    assert fast._nlp is not None


def test_a_cached_explanation_needs_no_weights_hashed_nor_spacy(world, monkeypatch):
    import falcon_core.models.clip as clip_mod
    import falcon_core.stages.concepts as concepts_mod

    cfg = tiny_config(world)
    cache_dir = str(world["base"] / "cache-warm")
    f1 = Falcon.from_config(cfg, settings=TOPK, cache_dir=cache_dir)
    exp = f1.explain(3)
    f2 = Falcon.from_config(cfg, settings=TOPK, cache_dir=cache_dir)

    def boom(*a, **k):
        raise AssertionError("a warm explanation must not do this")

    monkeypatch.setattr(cache_mod, "hash_file", boom)  # the CLIP checkpoint is not read again
    monkeypatch.setattr(clip_mod, "hash_state_dict", boom)
    monkeypatch.setattr(concepts_mod, "load_spacy", boom)
    assert f2.explain(3).to_dict() == exp.to_dict()
    assert f2.clip.source == "file"


def _union_rows(falcon, feats):
    return {int(i) for f in feats for i in falcon.select_high(f).indices}


def test_precompute_shares_work_and_gives_the_same_explanations(world):
    cfg = tiny_config(world)
    feats = [0, 1, 2, 3, 4, 5]
    one = Falcon.from_config(cfg, settings=TOPK, cache_dir=str(world["base"] / "cache-one"))
    many = Falcon.from_config(cfg, settings=TOPK, cache_dir=str(world["base"] / "cache-many"))
    many.representations()
    many.text_embeddings()
    from falcon_core.stages.gradcam import cam_grid

    cam_grid(many.backbone)  # the crop margin's grid: one blank image, once per backbone
    rows = []
    h = many.backbone.cam_layer.register_forward_hook(lambda m, a, o: rows.append(o.shape[0]))
    try:
        result = many.precompute(feats)
    finally:
        h.remove()
    assert all(err is None for err in result.values()), result
    assert many.explainer.search_memo == {}  # the shared searches are dropped after the chunk
    union = _union_rows(many, feats)
    total = sum(len(many.select_high(f).indices) for f in feats)
    assert total > len(union)  # the sets overlap, so there is work to share
    assert sum(rows) == len(union)  # each image of the union ran forward once
    for f in feats:
        a, b = one.explain(f).to_dict(), many.explain(f).to_dict()
        assert [c["text"] for c in a["words"]] == [c["text"] for c in b["words"]]
        assert [(r["index"], r["box"]) for r in a["high"]] == \
            [(r["index"], r["box"]) for r in b["high"]]
        assert a == b  # bit for bit: every score, caption and image


def test_prefill_searches_every_features_rows_once(world, monkeypatch):
    """After prefill, explaining the features searches nothing more: their T and L rows were all
    searched in the one shared search (each distinct row once), and give what a plain explain
    gives."""
    import falcon_core.caption_index as ci

    cfg = tiny_config(world)
    feats = [0, 1, 2, 3]
    one = Falcon.from_config(cfg, settings=TOPK, cache_dir=str(world["base"] / "cache-one-s"))
    many = Falcon.from_config(cfg, settings=TOPK, cache_dir=str(world["base"] / "cache-many-s"))
    many.explainer.spurious_threshold()  # the calibration's own search, done before
    calls = []
    real = ci.ExactIndex.search
    monkeypatch.setattr(ci.ExactIndex, "search",
                        lambda self, B, k: calls.append(len(B)) or real(self, B, k))
    counts = many.catalogue.prefill(feats)
    from falcon_core.explainer_stages import SHARED_SEARCH_ROWS

    # every distinct row once, in blocks of at most SHARED_SEARCH_ROWS rows (all full but the last)
    assert sum(calls) == counts["rows_searched"]
    assert calls == [SHARED_SEARCH_ROWS] * (len(calls) - 1) + [calls[-1]]
    assert 0 < calls[-1] <= SHARED_SEARCH_ROWS
    T_rows = sum(len(many.select_high(f).indices) for f in feats)
    assert 0 < counts["rows_searched"] <= T_rows + 10 * len(feats)

    def boom(self, B, k):
        raise AssertionError("searched again")

    monkeypatch.setattr(ci.ExactIndex, "search", boom)
    shared = [many.explain(f).to_dict() for f in feats]
    monkeypatch.setattr(ci.ExactIndex, "search", real)
    assert shared == [one.explain(f).to_dict() for f in feats]


def test_embed_images_rows_do_not_depend_on_the_batch(world):
    from falcon_core.explainer_stages import embed_images

    f = Falcon.from_config(tiny_config(world), settings=TOPK,
                           cache_dir=str(world["base"] / "cache-emb"))
    views = [f.store.view(i) for i in range(11)]
    alone = embed_images(f.clip, views[3:6])
    along = embed_images(f.clip, views)  # other images around them, other batch boundaries
    np.testing.assert_array_equal(alone, along[3:6])


def test_concept_text_rows_do_not_depend_on_the_texts_embedded_with_them(world):
    """The faithfulness score's concept texts: a text's row is the same bits whichever texts are
    embedded with it (so a concept shared by many features is embedded once, and a precompute
    gives a plain explain's scores), and it is the CLIP's embedding of that text."""
    from falcon_core.explainer_stages import embed_texts

    f = Falcon.from_config(tiny_config(world), settings=TOPK,
                           cache_dir=str(world["base"] / "cache-texts"))
    texts = ["red", "big red circle", "blue square", "grass", "small striped yellow star",
             "sky", "wooden brick wall on a sunny day", "sand", "green", "purple heart shape"]
    alone = embed_texts(f.clip, texts[1:3])
    along = embed_texts(f.clip, texts)
    np.testing.assert_array_equal(alone, along[1:3])
    np.testing.assert_allclose(along, f.clip.encode_texts(texts, trim=False), atol=1e-5)


def test_concepts_are_embedded_once_per_explainer(world, monkeypatch):
    f = Falcon.from_config(tiny_config(world), settings=TOPK,
                           cache_dir=str(world["base"] / "cache-texts-memo"))
    import falcon_core.explainer_stages as es

    seen = []
    real = es.embed_texts
    monkeypatch.setattr(es, "embed_texts", lambda clip, texts: seen.extend(texts) or real(clip, texts))
    a = f.explainer.concept_embeddings(["red", "blue circle"])
    assert seen == ["red", "blue circle"]
    seen.clear()
    b = f.explainer.concept_embeddings(["blue circle", "green", "red"])
    assert seen == ["green"]
    np.testing.assert_array_equal(a, b[[2, 0]])


# ---- what a precompute shares, counted (never timed): each test fails when the sharing breaks

def _fresh(world, name, feats_for_calibration=True):
    f = Falcon.from_config(tiny_config(world), settings=TOPK,
                           cache_dir=str(world["base"] / name))
    f.representations()
    f.text_embeddings()
    f.view_embeddings()
    from falcon_core.stages.gradcam import cam_grid

    cam_grid(f.backbone)  # the crop margin's grid: one blank image, once per backbone
    if feats_for_calibration:  # per-workspace work every explanation reads, done before
        f.explainer.spurious_threshold()
        f.explainer.document_frequencies()
    return f


def test_precompute_embeds_each_crop_once_in_full_batches(world, monkeypatch):
    """The crops of every feature go through CLIP together: each distinct (image, box) once, in
    full batches of 8 (only the last one padded), where one explain per feature pads each
    feature's last batch."""
    from falcon_core.explainer_stages import IMAGE_BATCH

    feats = [0, 1, 2, 3, 4, 5]
    many = _fresh(world, "cache-crops-many")
    rows = []
    real = many.clip.encode_images
    monkeypatch.setattr(many.clip, "encode_images",
                        lambda images, **k: rows.append(len(images)) or real(images, **k))
    many.precompute(feats)
    crops = {(int(r["index"]), tuple(r["box"])) for f in feats
             for r in many.explain(f).to_dict()["high"]}
    per_feature = [len(many.select_high(f).indices) for f in feats]
    assert len(crops) <= sum(per_feature)  # (an image's box differs between features)
    assert rows == [-(-len(crops) // IMAGE_BATCH) * IMAGE_BATCH]  # one call, each crop once
    # one explain per feature pads each feature's last batch: more rows through CLIP
    assert rows[0] < sum(-(-n // IMAGE_BATCH) * IMAGE_BATCH for n in per_feature)


def test_precompute_runs_spacy_once_over_the_vocabulary_for_its_concept_table(world,
                                                                              monkeypatch):
    """Every caption of the vocabulary goes through spaCy once, for the concept table (which
    also gives the document frequencies); the explanations then look their captions up."""
    from falcon_core.stages import concepts as concepts_stage

    feats = [0, 1, 2, 3, 4, 5]
    calls = []
    real = concepts_stage.ConceptExtractor.iter_docs
    monkeypatch.setattr(concepts_stage.ConceptExtractor, "iter_docs",
                        lambda self, texts: calls.append(list(texts)) or real(self, calls[-1]))
    many = _fresh(world, "cache-spacy-table")  # its document frequencies build the table
    many.precompute(feats)
    for f in feats:
        many.explain(f)
    vocab = many.vocabulary
    assert calls == [vocab.captions(range(len(vocab)))]  # one pass, each caption once


def test_precompute_runs_spacy_once_over_the_union_of_captions(world, monkeypatch):
    """Without a concept table (a vocabulary above its size limit), the captions of every
    feature's T and L images go through spaCy once, in one call, each caption once; the
    explanations then run spaCy no more."""
    from falcon_core.data import vocabulary as vocab_mod
    from falcon_core.stages import concepts as concepts_stage

    feats = [0, 1, 2, 3, 4, 5]
    many = _fresh(world, "cache-spacy-many")
    monkeypatch.setattr(vocab_mod, "CONCEPT_TABLE_MAX", len(many.vocabulary) - 1)
    calls = []
    real = concepts_stage.ConceptExtractor.docs
    monkeypatch.setattr(concepts_stage.ConceptExtractor, "docs",
                        lambda self, texts: calls.append(list(texts)) or real(self, texts))
    many.precompute(feats)
    found = {m["text"] for f in feats for kind in ("high", "low")
             for r in many.explain(f).to_dict()[kind] for m in r["captions"]}
    assert len(calls) == 1, [len(c) for c in calls]
    assert sorted(calls[0]) == sorted(found)  # the union, each caption once


def test_precompute_embeds_the_union_of_concept_texts_once(world, monkeypatch):
    """The faithfulness scores' concept texts of all the features are embedded in one call after
    every feature's concepts are known: each text once, in the fewest batches of 8 of one
    tokenised length -- fewer than one call per feature -- with explain's results."""
    import falcon_core.models.clip as clip_mod
    from falcon_core.explainer_stages import TEXT_BATCH, _tokens_and_lengths, faithfulness_texts
    from falcon_core.stages import faithfulness as faithfulness_stage

    feats = [0, 1, 2, 3, 4, 5]
    many = _fresh(world, "cache-texts-many")
    batches = []
    real = clip_mod.encode_text_trimmed
    monkeypatch.setattr(clip_mod, "encode_text_trimmed",
                        lambda model, tokens: batches.append(tokens.shape[0]) or real(model, tokens))
    seen = []
    real_ce = many.explainer.concept_embeddings
    monkeypatch.setattr(many.explainer, "concept_embeddings",
                        lambda texts: seen.append(list(texts)) or real_ce(texts))
    many.precompute(feats)
    exps = [many.explain(f) for f in feats]
    per_feature = []
    for e in exps:
        n = faithfulness_stage.TOP_CONCEPTS
        kept, removed = e.words[:n] + e.phrases[:n], e.spurious_words[:n] + e.spurious_phrases[:n]
        per_feature.append(faithfulness_texts(kept, removed, e.words + e.phrases
                                              + e.spurious_words + e.spurious_phrases))
    union = list(dict.fromkeys(t for texts in per_feature for t in texts))
    # one call with every feature's texts (each once), before any faithfulness score
    assert len(seen[0]) == len(set(seen[0])) and set(seen[0]) == set(union)
    _, lengths = _tokens_and_lengths(many.clip, union)
    groups = {}
    for n in lengths:
        groups[n] = groups.get(n, 0) + 1
    assert batches == [TEXT_BATCH] * sum(-(-g // TEXT_BATCH) for g in groups.values())
    # one explain per feature embeds each feature's new texts in its own padded batches: more
    one = _fresh(world, "cache-texts-one")
    batches.clear()
    for f in feats:
        assert one.explain(f).to_dict() == many.explain(f).to_dict()
    assert len(batches) > sum(-(-g // TEXT_BATCH) for g in groups.values())


def test_embed_texts_gives_encode_texts_bits(world):
    """embed_texts runs the trimmed tower itself on tokens made once: the rows are the bits
    ``clip.encode_texts`` gives for the same padded batch of one length."""
    from falcon_core.explainer_stages import TEXT_BATCH, _tokens_and_lengths, embed_texts

    f = Falcon.from_config(tiny_config(world), settings=TOPK,
                           cache_dir=str(world["base"] / "cache-texts-bits"))
    assert f.clip.text_trim  # the direct path is the one under test
    texts = ["red", "big red circle", "blue square", "grass", "small striped yellow star",
             "sky", "wooden brick wall on a sunny day", "sand", "green", "purple heart shape",
             "a red circle", "the blue sky", "sand and grass", "yellow", "a wall"]
    got = embed_texts(f.clip, texts)
    _, lengths = _tokens_and_lengths(f.clip, texts)
    for n in set(lengths):
        idx = [i for i, v in enumerate(lengths) if v == n]
        for a in range(0, len(idx), TEXT_BATCH):
            part = idx[a:a + TEXT_BATCH]
            batch = [texts[i] for i in part]
            batch += [batch[-1]] * (TEXT_BATCH - len(batch))
            np.testing.assert_array_equal(got[part], f.clip.encode_texts(batch)[:len(part)])


def test_precompute_says_why_a_feature_has_no_explanation(world):
    f = _fresh(world, "cache-bad-feature", feats_for_calibration=False)
    result = f.precompute([0, 10_000])
    assert result[0] is None
    assert "10000" in result[10_000] or "10 000" in result[10_000] or "does not exist" in \
        result[10_000].lower(), result


def test_precompute_cuts_each_features_boxes_once_and_hashes_each_key_once(world, monkeypatch):
    """A precompute cuts each feature's crop boxes from its GradCAM maps once (the prefill's
    boxes are reused by its shared search and by the explanation: box_memo) and hashes each
    explanation key once (the prefill's keys go to explain_many); same explanations as a plain
    explain. The memo is emptied after the chunk."""
    from falcon_core.explainer import Explainer
    from falcon_core.explainer_stages import ImageStages

    feats = [0, 1, 2, 3, 4, 5]
    many = _fresh(world, "cache-boxes-many")
    one = _fresh(world, "cache-boxes-one")
    boxes, keys = [], []
    real_boxes, real_key = ImageStages._boxes, Explainer.explanation_key
    monkeypatch.setattr(ImageStages, "_boxes",
                        lambda self, *a, **k: boxes.append(1) or real_boxes(self, *a, **k))
    monkeypatch.setattr(Explainer, "explanation_key",
                        lambda self, *a, **k: keys.append(1) or real_key(self, *a, **k))
    got = {}
    many.precompute(feats, on_feature=lambda f, exp, err: got.__setitem__(f, exp))
    assert len(boxes) == len(feats)  # one cut per feature (was three: prefill, search, explain)
    assert len(keys) == len(feats)  # one hash per feature (was two: prefill, explain_many)
    assert many.explainer.box_memo is None  # emptied and off after the chunk
    monkeypatch.setattr(ImageStages, "_boxes", real_boxes)
    monkeypatch.setattr(Explainer, "explanation_key", real_key)
    assert [got[f].to_dict() for f in feats] == [one.explain(f).to_dict() for f in feats]


def test_a_plain_explain_keeps_no_boxes(world):
    """Outside a precompute the box memo stays empty (an app process explaining feature after
    feature must not grow it)."""
    f = _fresh(world, "cache-boxes-plain")
    f.explain(0)
    f.explain(1)
    assert f.explainer.box_memo is None


def test_explain_many_makes_every_faithfulness_product_before_ranking_them(world, monkeypatch):
    """explain_many makes its features' faithfulness products back to back (no ranking between
    them, so the BLAS threads are not kept spinning through numpy work), ranks them after, in
    groups of bounded size, and gives a plain explain's explanations bit for bit."""
    import falcon_core.explainer as explainer_mod
    from falcon_core.explainer_stages import ImageStages
    from falcon_core.stages import faithfulness as F

    cfg = tiny_config(world)
    feats = [0, 1, 2, 3]
    falcons = {name: Falcon.from_config(cfg, settings=TOPK,
                                        cache_dir=str(world["base"] / f"cache-faith-{name}"))
               for name in ("one", "many", "grouped")}
    for f in falcons.values():  # what every side computes first, out of the recorded calls
        f.representations()
        f.explainer.spurious_threshold()
    order = []
    real_plan, real_rank = ImageStages.faithfulness_plan, F.score_rows
    monkeypatch.setattr(ImageStages, "faithfulness_plan",
                        lambda self, *a: order.append("plan") or real_plan(self, *a))
    monkeypatch.setattr(F, "score_rows", lambda *a: order.append("rank") or real_rank(*a))

    def explained(name):
        got = {}
        falcons[name].explainer.explain_many(feats, on_feature=lambda f, e, err: got.update({f: e}))
        return [got[f].to_dict() for f in feats]

    many = explained("many")
    assert order == ["plan"] * 4 + ["rank"] * 4
    order.clear()
    monkeypatch.setattr(explainer_mod, "FAITHFULNESS_GROUP_VALUES", 1)  # each plan its own group
    grouped = explained("grouped")
    assert order == ["plan", "rank"] * 4
    order.clear()
    plain = [falcons["one"].explain(f).to_dict() for f in feats]
    assert order == ["plan", "rank"] * 4
    assert all(p["faithfulness"]["per_concept"] for p in plain)  # something was scored
    assert many == plain and grouped == plain  # bit for bit
