"""The demo probe set, rendered on demand: :class:`SceneProbe`.

The demo world's 5,000 probe scenes used to be rendered all at once when a workspace opened
(about a minute on 2 cores). Most uses need a few dozen of them: an explanation looks at its
highly activating images and counterfactuals only, once Stage 1's ``H`` and the CLIP embeddings
of the views are known (cached, or shipped with the demo world: :mod:`falcon_core.demo.prefill`).
So a scene is rendered when it is first loaded (``World.render`` is deterministic from the scene
dict alone: the pixels are the same as in the all-at-once render) and kept in a bounded memory
cache. Work that reads every image (Stage 1 when ``H`` is not cached, the views' CLIP embeddings)
switches to the all-at-once render once :data:`MATERIALISE_AFTER` scenes were asked for; that
render is cached on disk (``probe_scenes``), as before, and later processes read it directly.

The fingerprint is the one the all-at-once probe set had (world hash, size, seed, generator
version), so cache entries are shared between the two.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from ..data.probes import ProbeSet

#: Scenes rendered one by one before the whole probe set is rendered (and cached) at once.
MATERIALISE_AFTER = 512
#: Rendered scenes kept in memory (64 × 64 × 3 bytes each for the default world: 24 MB).
MEMORY_SCENES = 2048


class SceneProbe(ProbeSet):
    """The demo world's probe set (``n`` scenes of ``seed``); images rendered when loaded.

    ``scenes``: the scene dicts (``probe_scene_dicts``); ``rendered()``: the path-free check of
    the all-at-once render in the cache (its memmap, or None when it is not there); ``render_all
    (progress)``: that render (computed and cached when missing)."""

    kind = "array"

    def __init__(self, world, scenes: list[dict], fingerprint: str, description: str,
                 rendered: Callable[[], Optional[np.ndarray]],
                 render_all: Callable[[Any], np.ndarray], progress=None):
        super().__init__()
        self.world = world
        self.scenes = scenes
        n = len(scenes)
        self.ids = [f"scene-{i:05d}" for i in range(n)]
        self.labels = np.asarray([world.label(s) for s in scenes], dtype=np.int64)
        self.class_names = list(world.class_names)
        self.description = description
        self._fingerprint = fingerprint
        self._rendered, self._render_all, self._progress = rendered, render_all, progress
        self._images: Optional[np.ndarray] = None
        self._memory: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._asked: set[int] = set()
        self._lock = threading.Lock()
        self.renders = 0  # scenes rendered one by one by this object (tests, benchmarks)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def images(self) -> np.ndarray:
        """Every image, ``uint8 (N, S, S, 3)`` (renders and caches them all when needed)."""
        return self._all()

    def _all(self) -> np.ndarray:
        with self._lock:
            if self._images is None:
                self._images = self._rendered()
            if self._images is None:
                self._images = self._render_all(self._progress)
            return self._images

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i`` as a ``uint8 (S, S, 3)`` array."""
        i = self._check_index(i)
        with self._lock:
            if self._images is None and not self._asked:
                self._images = self._rendered()  # rendered earlier (this or another process)
            if self._images is not None:
                return np.ascontiguousarray(self._images[i])
            hit = self._memory.get(i)
            if hit is not None:
                self._memory.move_to_end(i)
                return hit
            self._asked.add(i)
            many = len(self._asked) > MATERIALISE_AFTER
        if many:
            return np.ascontiguousarray(self._all()[i])
        arr = self.world.render(self.scenes[i])
        arr.flags.writeable = False
        with self._lock:
            self.renders += 1
            self._memory[i] = arr
            while len(self._memory) > MEMORY_SCENES:
                self._memory.popitem(last=False)
        return arr

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.pixels(i)), mode="RGB")

    def describe(self) -> dict:
        d = super().describe()
        S = int(self.world.image_size)
        d.update({"shape": [len(self), S, S, 3], "description": self.description})
        return d
