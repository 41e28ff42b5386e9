"""Every key of FALCON's disk cache: one function per namespace, stating what determines it.

A key is :meth:`DiskCache.key` of its parts (the sha256 of their canonical JSON), so an entry is
found again exactly when everything it was computed from is the same, and nothing stale is ever
read back. The parts are fingerprints (hashes of contents, never paths or timestamps alone):

====================  ===================================================================
namespace             determined by
====================  ===================================================================
representations       backbone (weights, layer, pooling, preprocessing), probe set
representation_errors the representations key and the chunk of rows
text_embeddings       CLIP model, vocabulary, embedding width
document_frequency    vocabulary, concept extraction, the sample counted (0: every caption)
document_frequency_   the document_frequency key and the chunk of captions (removed once
parts                 the counts are complete)
concept_table         vocabulary, concept extraction, the table's format (every caption's
                      concepts by row; vocabularies up to ``CONCEPT_TABLE_MAX`` captions)
concept_table_parts   the concept_table key and the chunk of captions (removed once whole)
cams                  backbone, probe set, the features (group), the images
crop_embeddings       the cams key, the CAM threshold, the crop boxes, CLIP model
view_embeddings       probe set, the backbone's view of the images, CLIP model (every image)
concept_naming        the view_embeddings key, vocabulary, concept extraction, captions per
                      image, the images (what CLIP names in each whole view; issue 12)
caption_scale         :func:`explanation_inputs`, captions per image, the images sampled
explanations          :func:`explanation_inputs` (models, data, concept extraction), the
                      features, every setting but the result-neutral ones
caption_text          one LAION metadata file (name, size, modification time), the format
caption_index         the text embeddings (CLIP model and vocabulary), the index kind and
                      every build parameter
====================  ===================================================================

Settings that only change how fast a result is computed (:data:`RESULT_NEUTRAL_SETTINGS`) are left
out, so changing them reuses what is cached. ``PIPELINE_VERSION`` is part of the keys whose meaning
depends on this code: bump it when a change to the code changes a cached result.
"""

from __future__ import annotations

from typing import Any, Sequence

from .cache import DiskCache, hash_json

PIPELINE_VERSION = 2
# Settings that change how fast a result is computed, never the result itself.
RESULT_NEUTRAL_SETTINGS = ("batch_size",)
# Settings at the value that gives the results keys meant before the setting existed: left out of
# the key at that value (exact caption search is the brute force; a crop margin of 0 is the
# paper's box), part of it otherwise.
# cam_box_margin 0 is the paper's box, the only box before the setting (issue 7).
DEFAULT_NEUTRAL_SETTINGS = {"caption_index": "exact", "cam_box_margin": 0.0}


def representations(backbone: str, probe: str) -> str:
    """``H`` of a probe set: the backbone's fingerprint (weights, explained layer, pooling,
    preprocessing) and the probe set's fingerprint (its images and how they are read)."""
    return DiskCache.key("representations", backbone=backbone, probe=probe,
                         version=PIPELINE_VERSION)


def representation_errors(representations_key: str, start: int) -> str:
    """The unreadable images of the chunk of ``H`` whose first row is ``start``."""
    return f"{representations_key}-{int(start)}"


def text_embeddings(clip: str, vocabulary: str, dim: int) -> str:
    """``A``: the CLIP model's fingerprint, the vocabulary's (its cleaned captions), the width."""
    return DiskCache.key("text_embeddings", clip=clip, vocabulary=vocabulary, dim=int(dim))


def document_frequency(vocabulary: str, concepts: dict[str, Any], sample: int) -> str:
    """Each concept's document frequency over a vocabulary: the vocabulary's fingerprint (like
    the text embeddings), the concept extraction's (``ConceptExtractor.fingerprint``) and the
    number of captions sampled (0: all of them)."""
    return DiskCache.key("document_frequency", vocabulary=vocabulary, concepts=concepts,
                         sample=int(sample))


def concept_table(vocabulary: str, concepts: dict[str, Any]) -> str:
    """Every caption's concepts, by row (:class:`~.stages.concepts.ConceptTable`): the
    vocabulary's fingerprint, the concept extraction's (``ConceptExtractor.fingerprint``) and
    the table's stored format."""
    from .stages.concepts import TABLE_FORMAT

    return DiskCache.key("concept_table", vocabulary=vocabulary, concepts=concepts,
                         format=TABLE_FORMAT)


def concept_table_part(concept_table_key: str, start: int) -> str:
    """The rows of the chunk of captions whose first one is ``start`` (while building)."""
    return f"{concept_table_key}-{int(start)}"


def document_frequency_part(document_frequency_key: str, start: int) -> str:
    """The counts of the chunk of captions whose first one is ``start`` (while counting)."""
    return f"{document_frequency_key}-{int(start)}"


def cams(backbone: str, probe: str, features: Sequence[int], images: Sequence[int]) -> str:
    """GradCAM maps of a feature or group (target: the summed activation) on some images."""
    return DiskCache.key("cams", backbone=backbone, probe=probe,
                         features=[int(f) for f in features],
                         images=hash_json([int(i) for i in images]), version=PIPELINE_VERSION)


# How the crop embeddings of Stages 3-4 are computed: in batches of exactly
# IMAGE_BATCH images (falcon_core.explainer_stages.embed_images), so each row is independent of
# the others in its batch; entries computed in batches of any size (before) differ in their
# last bits, and are not read.
IMAGE_BATCH = 8
EMBEDDED_ROWS = f"fixed-batch-{IMAGE_BATCH}"
# Where an explanation's whole-image embeddings (Stage 6's L, the caption scale's sample) come
# from: rows of the view embeddings (before: the images embedded again, in batches of
# IMAGE_BATCH, whose last bits differ). Part of every explanation's inputs.
WHOLE_VIEWS = "rows-of-view-embeddings"
# How the faithfulness score's concept texts are embedded: per tokenised length, in batches of
# exactly TEXT_BATCH (falcon_core.explainer_stages.embed_texts; before: one batch of all of an
# explanation's concepts, cut to the longest). Part of every explanation's inputs.
TEXT_BATCH = 8
CONCEPT_ROWS = f"length-buckets-batch-{TEXT_BATCH}"


def crop_embeddings(cams_key: str, cam_threshold: float, clip: str,
                    boxes: Sequence[Sequence[int]], margin: float) -> str:
    """CLIP embeddings of the crops cut from those CAMs at ``cam_threshold``, widened by
    ``margin`` CAM cells: the boxes too, so another crop rule on the same CAMs (another margin,
    a benchmark's whole-view ablation) never reads them."""
    widened = {"margin": float(margin)} if margin else {}  # 0: the keys of before the margin
    return DiskCache.key("crop_embeddings", cams=cams_key, threshold=float(cam_threshold),
                         **widened,
                         boxes=hash_json([[int(v) for v in b] for b in boxes]), clip=clip,
                         rows=EMBEDDED_ROWS)


def caption_text(metadata_file: str, version: int) -> str:
    """The caption column of one LAION metadata file (:class:`~.data.vocabulary.CaptionText`):
    the file's fingerprint (name, size, modification time) and the entry's format version."""
    return DiskCache.key("caption_text", metadata=metadata_file, version=int(version))


def caption_index(embeddings: str, kind: str, params: dict[str, Any]) -> str:
    """A search index over a vocabulary's text embeddings (:mod:`.caption_index`):
    ``embeddings`` says which (the text-embeddings key, or the vocabulary's fingerprint for
    precomputed LAION embeddings), ``kind`` and ``params`` how it was built."""
    return DiskCache.key("caption_index", embeddings=embeddings, kind=kind, params=params)


def view_embeddings(probe: str, backbone: str, clip: str) -> str:
    """CLIP embeddings of every probe image's whole view (the backbone's resize and crop)."""
    return DiskCache.key("view_embeddings", probe=probe, backbone_view=backbone, clip=clip)


def concept_naming(views: str, vocabulary: str, concepts: dict[str, Any], k: int,
                   images: Sequence[int]) -> str:
    """The concepts CLIP names in each probe image's whole view (its top-``k`` captions' words):
    the view embeddings (:func:`view_embeddings`' key), the vocabulary, the concept extraction,
    ``k`` and the images named."""
    return DiskCache.key("concept_naming", views=views, vocabulary=vocabulary, concepts=concepts,
                         k=int(k), images=hash_json([int(i) for i in images]),
                         version=PIPELINE_VERSION)


def view_naming(inputs: dict[str, Any], k: int) -> str:
    """The concepts (words and phrases) of every valid probe image's top-``k`` whole-view
    captions (the conditional contrast rule): everything an explanation depends on
    (:func:`explanation_inputs`, an ablation's name included) and ``k``."""
    return DiskCache.key("view_naming", inputs=inputs, k=int(k), version=PIPELINE_VERSION)


def caption_scale(inputs: dict[str, Any], k: int, sample: int) -> str:
    """The CLIP's caption similarity scale on a probe set and vocabulary: everything an
    explanation depends on (:func:`explanation_inputs`), the captions kept per image and the
    number of probe images sampled."""
    return DiskCache.key("caption_scale", inputs=inputs, k=int(k), sample=int(sample))


def explanation_inputs(backbone, clip, probe, vocabulary, concepts: dict[str, Any]
                       ) -> dict[str, Any]:
    """What an explanation depends on besides its features and settings (stored with it):
    the fingerprints of the backbone, CLIP, probe set and vocabulary, the explained layer, the
    concept extraction (``ConceptExtractor.fingerprint``: spaCy pipeline name and version, POS
    set, boilerplate list), the pipeline version, the faithfulness score's version and where
    the whole-image embeddings come from (:data:`WHOLE_VIEWS`), how concept texts are embedded
    (:data:`CONCEPT_ROWS`)."""
    from .stages.faithfulness import VERSION as faithfulness_version

    return {
        "backbone": backbone.fingerprint,
        "layer": backbone.layer,
        "clip": clip.fingerprint,
        "probe": probe.fingerprint,
        "vocabulary": vocabulary.fingerprint,
        "concepts": concepts,
        "pipeline": PIPELINE_VERSION,
        "faithfulness": faithfulness_version,
        "whole_views": WHOLE_VIEWS,
        "concept_rows": CONCEPT_ROWS,
    }


def explanation(inputs: dict[str, Any], features: Sequence[int], settings: dict[str, Any]) -> str:
    """An explanation: :func:`explanation_inputs` (with the caption index's fingerprint when the
    search is approximate), the features, and every setting except
    :data:`RESULT_NEUTRAL_SETTINGS` (and :data:`DEFAULT_NEUTRAL_SETTINGS` at their value there)."""
    determining = {k: v for k, v in settings.items() if k not in RESULT_NEUTRAL_SETTINGS
                   and not (k in DEFAULT_NEUTRAL_SETTINGS and v == DEFAULT_NEUTRAL_SETTINGS[k])}
    return DiskCache.key("explanations", inputs=inputs, features=[int(f) for f in features],
                         settings=determining)
