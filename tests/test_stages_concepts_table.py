"""Issue 9: every vocabulary caption's concepts in one table per (vocabulary, extractor), looked
up by row instead of running spaCy in each explanation; and the explanation's bookkeeping (its
key without importlib.metadata per call)."""

import hashlib
import importlib.metadata
import json

import pytest

from falcon_core import cache_keys
from falcon_core.cache import DiskCache
from falcon_core.data import vocabulary as vocab_mod
from falcon_core.data.vocabulary import ListVocabulary, concept_table
from falcon_core.pipeline import Falcon
from falcon_core.settings import FalconSettings
from falcon_core.stages import concepts as concepts_stage
from falcon_core.stages.concepts import BOILERPLATE, CaptionConcepts, ConceptTable
from makers import make_tiny_world, tiny_config

TOPK = FalconSettings(high_rule="topk", top_k=6)


class WordsExtractor:
    """Concepts = the caption's lower-case words; phrase = the caption when it has 2+ words (no
    spaCy: rows checkable by hand). Counts the captions it is given."""

    def __init__(self, fail_after=None):
        self.seen = 0
        self.fail_after = fail_after
        self.fingerprint = {"fake": 1}

    def _one(self, t):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise RuntimeError("interrupted")
        self.seen += 1
        ws = frozenset(t.lower().split())
        return CaptionConcepts(ws, frozenset([t.lower()]) if len(ws) > 1 else frozenset())

    def iter_extract(self, texts):
        for t in texts:
            yield self._one(t)

    def extract(self, texts):
        return [self._one(t) for t in texts]


CAPS = ["dog lie", "cat", "lie dog", "cow cat"]


def test_table_rows_by_hand(tmp_path):
    cache = DiskCache(tmp_path / "c")
    seen = []
    t = concept_table(ListVocabulary(CAPS), WordsExtractor(), cache, chunk=3,
                      progress=lambda d, n, s: seen.append((d, n, s)))
    # distinct concepts in order of first appearance (a row's in text order)
    assert t.words == ["dog", "lie", "cat", "cow"]
    assert t.phrases == ["dog lie", "lie dog", "cow cat"]
    assert t.word_rows == [[0, 1], [2], [0, 1], [2, 3]]
    assert t.phrase_rows == [[0], [], [1], [2]]
    assert t.row(2) == CaptionConcepts(frozenset({"lie", "dog"}), frozenset({"lie dog"}))
    assert t.row(1) == CaptionConcepts(frozenset({"cat"}), frozenset())
    assert seen == [(3, 4, "concepts of every caption"), (4, 4, "concepts of every caption")]
    # stored under its key, the chunks' parts removed
    key = cache_keys.concept_table(ListVocabulary(CAPS).fingerprint, {"fake": 1})
    stored = cache.read_json("concept_table", key)
    assert stored == {"format": 1, "n": 4, "words": ["dog", "lie", "cat", "cow"],
                      "phrases": ["dog lie", "lie dog", "cow cat"],
                      "word_rows": [[0, 1], [2], [0, 1], [2, 3]],
                      "phrase_rows": [[0], [], [1], [2]]}
    assert not list((tmp_path / "c").rglob("concept_table_parts/*.json"))


def test_real_captions_table_rows_by_hand(tmp_path):
    caps = ["Dogs running on the beach", "A photo of a red circle", "cat"]
    t = concept_table(ListVocabulary(caps), concepts_stage.ConceptExtractor(),
                      DiskCache(tmp_path / "c"))
    assert t.row(0).words == {"dog", "run", "beach"}
    assert t.row(1).words == {"red", "circle"} and t.row(1).phrases == {"red circle"}
    assert t.row(2) == CaptionConcepts(frozenset({"cat"}), frozenset())


def test_table_is_cached_keyed_and_resumes(tmp_path):
    cache = DiskCache(tmp_path / "c")
    v = ListVocabulary(CAPS)
    with pytest.raises(RuntimeError):
        concept_table(v, WordsExtractor(fail_after=3), cache, chunk=2)
    ex = WordsExtractor()
    t = concept_table(v, ex, cache, chunk=2)
    assert ex.seen == 2  # the first chunk was stored before the interruption
    again = WordsExtractor()
    assert concept_table(v, again, cache, chunk=2).word_rows == t.word_rows
    assert again.seen == 0  # read back, no caption extracted
    other = WordsExtractor()
    other.fingerprint = {"fake": 2}  # another extractor: another table
    concept_table(v, other, cache)
    assert other.seen == 4
    concept_table(ListVocabulary(CAPS + ["owl"]), again, cache)  # another vocabulary
    assert again.seen == 5


@pytest.mark.parametrize("damage", ["rows", "size", "ids", "order", "format", "bytes"])
def test_a_damaged_or_foreign_table_is_built_again_not_used(tmp_path, damage):
    cache = DiskCache(tmp_path / "c")
    v = ListVocabulary(CAPS)
    good = concept_table(v, WordsExtractor(), cache).to_json()
    key = cache_keys.concept_table(v.fingerprint, {"fake": 1})
    bad = json.loads(json.dumps(good))
    if damage == "rows":
        bad["word_rows"] = bad["word_rows"][:3]  # a row missing
    elif damage == "size":
        bad.update(n=5, word_rows=bad["word_rows"] + [[]], phrase_rows=bad["phrase_rows"] + [[]])
    elif damage == "ids":
        bad["word_rows"][3] = [2, 4]  # no concept 4
    elif damage == "order":
        bad["word_rows"][0] = [1, 0]
    elif damage == "format":
        bad["format"] = 2
    cache.write_json("concept_table", key, bad)
    path = cache.path("concept_table", key, ".json")
    if damage == "bytes":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 1
        path.write_bytes(bytes(raw))
    ex = WordsExtractor()
    assert concept_table(v, ex, cache).to_json() == good
    assert ex.seen == 4  # built again from the captions
    assert [q["file"] for q in cache.quarantined] == [f"concept_table/{path.name}"]


def test_a_vocabulary_above_the_limit_has_no_table(tmp_path, monkeypatch):
    ex = WordsExtractor()
    assert concept_table(ListVocabulary(CAPS), ex, DiskCache(tmp_path / "c"), limit=3) is None
    assert ex.seen == 0
    monkeypatch.setattr(vocab_mod, "CONCEPT_TABLE_MAX", 3)
    assert concept_table(ListVocabulary(CAPS), ex, DiskCache(tmp_path / "c")) is None
    assert concept_table(ListVocabulary(CAPS[:3]), ex, DiskCache(tmp_path / "c")) is not None


def test_concepts_by_row_uses_the_table_only_for_its_own_captions():
    table = ConceptTable.from_concepts(WordsExtractor().iter_extract(CAPS))
    ex = WordsExtractor()
    got = concepts_stage.concepts_by_row([0, 3, -1, 1, 0], ["dog lie", "cow cat", "owl",
                                                            "not row 1", "dog lie"],
                                         ex, table, lambda rows: [CAPS[j] for j in rows])
    # rows 0 and 3 looked up; -1 (no row) and a text that is not row 1's extracted, once each
    assert ex.seen == 2
    assert got["dog lie"] is table.row(0) and got["cow cat"] is table.row(3)
    assert got["owl"].words == {"owl"} and got["not row 1"].words == {"not", "row", "1"}


# ------------------------------------------------------------------ explanations with the table

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("table-world"))


FEATS = [0, 1, 2, 3]


def test_an_explanation_with_the_table_is_the_one_without(world, monkeypatch):
    cfg = tiny_config(world)
    with_table = Falcon.from_config(cfg, settings=TOPK, cache_dir=str(world["base"] / "c-table"))
    table = with_table.concept_table()
    assert table is not None and len(table) == len(with_table.vocabulary)

    def boom(*a, **k):
        raise AssertionError("spaCy ran although the table has every caption")

    for name in ("docs", "iter_docs", "extract", "iter_extract"):
        monkeypatch.setattr(concepts_stage.ConceptExtractor, name, boom)
    got = [with_table.explain(f).to_dict() for f in FEATS]
    monkeypatch.undo()

    monkeypatch.setattr(vocab_mod, "CONCEPT_TABLE_MAX", len(with_table.vocabulary) - 1)
    without = Falcon.from_config(cfg, settings=TOPK, cache_dir=str(world["base"] / "c-none"))
    calls = []
    real = concepts_stage.ConceptExtractor.extract
    monkeypatch.setattr(concepts_stage.ConceptExtractor, "extract",
                        lambda self, texts: calls.append(len(texts)) or real(self, texts))
    assert without.concept_table() is None  # above the limit: the extractor's way
    want = [without.explain(f).to_dict() for f in FEATS]
    assert calls  # spaCy ran in the explanations
    assert sum(len(r["captions"]) for e in got for r in e["high"]) > 0
    assert got == want  # every concept, score, caption and image


# ------------------------------------------------------------------ the explanation's key

def test_the_explanation_key_is_mains_and_needs_no_metadata_per_call(world, monkeypatch):
    """The key main computes, rebuilt here from its formula (DiskCache.key: sha256 of the
    canonical JSON of {namespace, parts, format}; the concept fingerprint from the loaded
    pipeline's meta, the installed spaCy's version, the POS set and the boilerplate's sha256),
    then the same key again with importlib.metadata unusable."""
    from falcon_core.cache_format import CACHE_FORMAT
    from falcon_core.stages.faithfulness import VERSION

    f = Falcon.from_config(tiny_config(world), settings=TOPK,
                           cache_dir=str(world["base"] / "c-key"))
    meta = f.extractor.nlp.meta
    concepts = {"spacy_pipeline": f"{meta['lang']}_{meta['name']}",
                "spacy_pipeline_version": meta["version"],
                "spacy_version": importlib.metadata.version("spacy"),
                "pos": ["ADJ", "NOUN", "PROPN", "VERB"],
                "boilerplate": hashlib.sha256("\n".join(sorted(BOILERPLATE)).encode()).hexdigest()}
    inputs = {"backbone": f.backbone.fingerprint, "layer": f.backbone.layer,
              "clip": f.clip.fingerprint, "probe": f.probe.fingerprint,
              "vocabulary": f.vocabulary.fingerprint, "concepts": concepts,
              "pipeline": cache_keys.PIPELINE_VERSION, "faithfulness": VERSION,
              "whole_views": "rows-of-view-embeddings", "concept_rows": "length-buckets-batch-8"}
    settings = {k: v for k, v in TOPK.to_dict().items() if k != "batch_size"
                and not (k == "caption_index" and v == "exact")
                and not (k == "cam_box_margin" and v == 0.0)}
    payload = {"namespace": "explanations", "format": CACHE_FORMAT,
               "parts": {"inputs": inputs, "features": [3], "settings": settings}}
    want = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()
    assert f.explanation_key(3) == want

    def boom(*a, **k):
        raise AssertionError("importlib.metadata read for a key")

    monkeypatch.setattr(importlib.metadata, "version", boom)
    assert f.explanation_key(3) == want
    # a new extractor in the same process: the spaCy version is not read again either
    assert concepts_stage.ConceptExtractor(f.extractor.nlp).fingerprint == concepts


def test_the_fingerprint_follows_a_replaced_boilerplate_or_pos():
    ex = concepts_stage.ConceptExtractor()
    fp = ex.fingerprint
    fp["pos"].append("X")  # a copy: the memo is not changed through it
    assert ex.fingerprint["pos"] == ["ADJ", "NOUN", "PROPN", "VERB"]
    ex.boilerplate = BOILERPLATE | {"thing"}
    assert ex.fingerprint["boilerplate"] == hashlib.sha256(
        "\n".join(sorted(BOILERPLATE | {"thing"})).encode()).hexdigest()
    ex.pos = frozenset({"NOUN"})
    assert ex.fingerprint["pos"] == ["NOUN"]


def test_the_rows_kept_in_memory_are_bounded(monkeypatch):
    monkeypatch.setattr(concepts_stage, "ROW_MEMO_MAX", 2)
    table = ConceptTable.from_concepts(WordsExtractor().iter_extract(CAPS))
    got = [table.row(i) for i in (0, 1, 2, 3, 0)]
    assert len(table._rows) <= 2
    assert got == list(WordsExtractor().iter_extract(CAPS + CAPS[:1]))
