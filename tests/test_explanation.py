"""The Explanation object: provenance, JSON and CSV, built by hand."""

import json

from falcon_core.explanation import CaptionMatch, Concept, Explanation, ImageRecord


def make() -> Explanation:
    cap_sea = CaptionMatch(0, "waves on the sea", 0.5, words=["sea", "wave"], phrases=[])
    cap_shell = CaptionMatch(1, "a seashell on sand", 0.4, words=["sand", "seashell"], phrases=[])
    cap_old = CaptionMatch(2, "the sea at night", 0.3)  # stored without concepts
    high = [ImageRecord(3, "a.png", 0.9, [cap_sea, cap_shell], box=(0, 0, 10, 10)),
            ImageRecord(7, "b.png", 0.8, [cap_old])]
    return Explanation(
        features=[4], words=[Concept("sea", 0.4, 0.0)], phrases=[],
        spurious_words=[Concept("sand", 0.2, 0.15)], spurious_phrases=[], high=high, low=[],
        coherence=float("nan"), interpretable=False, high_selection={}, low_selection={},
        settings={}, inputs={})


def test_provenance_uses_the_captions_concepts_not_substrings():
    exp = make()
    pairs = exp.provenance("sea")
    # "seashell" contains "sea" but is not the concept; the old caption matches as a whole word
    assert [(r.id, c.index) for r, c in pairs] == [("a.png", 0), ("b.png", 2)]
    assert [(r.id, c.index) for r, c in exp.provenance("seashell")] == [("a.png", 1)]
    assert exp.provenance("night") == [(exp.high[1], exp.high[1].captions[0])]


def test_provenance_of_the_counterfactuals_is_the_same_rule():
    """The L images a removed concept came from: whole concepts of the captions, as for T (the
    Spurious concepts page used to match substrings)."""
    exp = make()
    starfish = CaptionMatch(5, "a starfish on sand", 0.6, words=["sand", "starfish"], phrases=[])
    star = CaptionMatch(6, "a red star", 0.5, words=["red", "star"], phrases=["red star"])
    exp.low = [ImageRecord(11, "c.png", 0.01, [starfish]), ImageRecord(12, "d.png", 0.0, [star])]
    assert [(r.id, c.index) for r, c in exp.provenance("star", of="low")] == [("d.png", 6)]
    assert [r.id for r, _ in exp.provenance("red star", of="low")] == ["d.png"]
    assert [r.id for r, _ in exp.provenance("sand", of="low")] == ["c.png"]
    assert exp.provenance("star") == []  # of="high" (the default): T's captions only


def test_kept_concepts_below_the_cut_survive_the_round_trip():
    exp = make()
    exp.more_words = [Concept("wave", 0.1, 0.02)]
    back = Explanation.from_json(exp.to_json())
    assert back.more_words == [Concept("wave", 0.1, 0.02)] and back.more_phrases == []
    old = json.loads(exp.to_json())
    del old["more_words"], old["more_phrases"]  # an explanation cached before they existed
    assert Explanation.from_dict(old).more_words == []


def test_json_round_trip_and_csv():
    exp = make()
    data = json.loads(exp.to_json())
    assert data["coherence"] is None  # NaN is not valid JSON
    back = Explanation.from_json(exp.to_json())
    assert back.high[0].captions[0].words == ["sea", "wave"]
    assert back.high[0].box == (0, 0, 10, 10)
    assert back.words == exp.words
    rows = exp.to_csv().splitlines()
    assert rows[0] == "features,kind,concept,rank,t_score,l_score,status"
    assert rows[1:] == ["4,word,sea,1,0.4,0.0,kept", "4,word,sand,,0.2,0.15,spurious"]


def test_an_explanation_saved_before_concept_hygiene_reads_back_without_a_record():
    """A JSON export written before the ``hygiene`` field existed (same format version) reads
    back with an empty record (nothing was dropped), and a hygiene record round-trips."""
    data = json.loads(make().to_json())
    del data["hygiene"]
    assert Explanation.from_dict(data).hygiene == {}
    exp = make()
    exp.hygiene = {"enabled": True, "max_document_frequency": 0.5,
                   "dropped_words": [{"text": "lie", "score": 0.7, "document_frequency": 0.97}]}
    assert Explanation.from_json(exp.to_json()).hygiene == exp.hygiene


def test_to_dict_by_hand_and_back():
    """``to_dict`` walks the dataclasses itself (no ``asdict`` deep copy): every field in
    declaration order, tuples as lists, NaN (also a numpy one) as None, numpy scalars as Python
    numbers, nested dataclasses as dicts; and ``from_dict`` gives the explanation back."""
    import numpy as np

    from falcon_core.explanation import Faithfulness, FaithfulnessScore

    cap = CaptionMatch(np.int64(5), "a red circle", np.float32(0.5), words=["circle", "red"],
                       phrases=["red circle"])
    exp = Explanation(
        features=[2], words=[Concept("red", np.float64(0.25), 0.0)], phrases=[],
        spurious_words=[], spurious_phrases=[],
        high=[ImageRecord(1, "x.png", 0.75, [cap], box=(1, 2, 3, 4))],
        low=[ImageRecord(9, "y.png", np.float64("nan"), [], similarity=0.5)],
        coherence=float("nan"), interpretable=True, high_selection={"rule": "topk", "k": (1, 2)},
        low_selection={}, settings={"top_k": 6}, inputs={"probe": "p"},
        faithfulness=Faithfulness(FaithfulnessScore(["red"], [0.25], 0.875, float("nan"), 3, 10),
                                  None, {"red": 0.875}, "how"))
    image = {"index": 1, "id": "x.png", "activation": 0.75,
             "captions": [{"index": 5, "text": "a red circle", "score": 0.5,
                           "words": ["circle", "red"], "phrases": ["red circle"]}],
             "box": [1, 2, 3, 4], "box_fallback": False, "similarity": None}
    low = {"index": 9, "id": "y.png", "activation": None, "captions": [], "box": None,
           "box_fallback": False, "similarity": 0.5}
    want = {"features": [2], "words": [{"text": "red", "score": 0.25, "l_score": 0.0}],
            "phrases": [], "spurious_words": [], "spurious_phrases": [], "high": [image],
            "low": [low], "coherence": None, "interpretable": True,
            "high_selection": {"rule": "topk", "k": [1, 2]}, "low_selection": {},
            "settings": {"top_k": 6}, "inputs": {"probe": "p"}, "notes": [],
            "all_word_scores": {}, "all_phrase_scores": {}, "more_words": [],
            "more_phrases": [], "hygiene": {},
            "faithfulness": {"kept": {"concepts": ["red"], "weights": [0.25], "auc": 0.875,
                                      "spearman": None, "k": 3, "n_images": 10},
                             "removed": None, "per_concept": {"red": 0.875}, "method": "how"},
            "version": 1}
    got = exp.to_dict()
    assert json.dumps(got) == json.dumps(want)  # same keys in the same order, same values
    assert type(got["high"][0]["captions"][0]["index"]) is int
    assert type(got["high"][0]["box"]) is list and type(got["high_selection"]["k"]) is list
    assert type(got["high"][0]["captions"][0]["score"]) is float
    back = Explanation.from_dict(got)
    assert back.to_dict() == got
    assert back.high[0].box == (1, 2, 3, 4) and back.faithfulness.kept.auc == 0.875
