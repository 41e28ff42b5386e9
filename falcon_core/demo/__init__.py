"""The offline demo world (issue 3): a scene generator with known concepts, a small CLIP and a
small backbone trained on it, and the ground truth a benchmark checks FALCON against.

Interface for the rest of FALCON (see ``assets.py`` for details)::

    DEFAULT_WORLD, load_world(path=None) -> World
    probe_scenes(world, n=5000, seed=0) -> (images uint8 memmap (N,S,S,3), scenes, labels, class_names)
    vocabulary_captions(world, seed=0) -> list[str]            # >= 20,000 distinct, cached
    demo_clip_spec() -> (model_name, checkpoint_path); load_demo_clip() -> open_clip factory results
    build_demo_backbone_module() -> (nn.Module in eval mode, meta)
    synonyms(world) -> {"attr=value": [words and their spaCy lemmas]}
    ground_truth(H, scenes_or_binary, names=None, threshold=0.85) -> [FeatureTruth]
"""

from .assets import (build_demo_backbone_module, cache_dir, demo_clip_spec, ensure_assets, load_demo_clip,
                     probe_scene_dicts, probe_scenes, read_manifest, synonyms, vocabulary_captions)
from .ground_truth import FeatureTruth, attribute_matrix, attribute_names, auc_table, clear_share, ground_truth
from .world import ALT_WORLD, ASSETS_DIR, DEFAULT_WORLD, GENERATOR_VERSION, World, WorldConfigError, load_world

__all__ = [
    "ALT_WORLD", "ASSETS_DIR", "DEFAULT_WORLD", "GENERATOR_VERSION", "FeatureTruth", "World", "WorldConfigError",
    "attribute_matrix", "attribute_names", "auc_table", "build_demo_backbone_module", "cache_dir", "clear_share",
    "demo_clip_spec", "ensure_assets", "ground_truth", "load_demo_clip", "load_world",
    "probe_scene_dicts", "probe_scenes", "read_manifest", "synonyms", "vocabulary_captions",
]
