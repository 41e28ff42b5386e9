"""Captions of demo scenes: varied natural English, like real alt-text.

Every attribute is named with the words of the world config (``words``/``phrases``/``adj``/
``with``), so a benchmark can match FALCON's words against :func:`falcon_core.demo.synonyms`.
Captions vary the synonyms, the word order (adjectives before the noun, "with stripes" after it,
the background first or last), add filler words (lying, resting, close-up, photo) and sometimes
leave attributes out, as real captions do.

Three kinds:
- :func:`scene_caption`: the whole scene (objects and background);
- :func:`object_caption`: one object, as seen in a crop around it (the background only sometimes);
- :func:`vocabulary`: the caption vocabulary of the demo world, >= 20,000 distinct captions made
  of captions of scenes drawn like the probe set plus *distractors*: captions of scenes whose
  main-object combination (shape, colour, pattern, background) never occurs in the probe set.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .world import World

_SINGLE = [
    ("{o} on {b}", 6), ("{o} lying on {b}", 1), ("{o} resting on {b}", 1), ("{B} with {o}", 2),
    ("{o} against {b}", 1), ("{o} in front of {b}", 1), ("close-up of {o} on {b}", 1),
    ("photo of {o} on {b}", 1), ("{o} placed on {b}", 1), ("{o} sitting on {b}", 1),
    ("{o} over {b}", 1), ("{o} seen on {b}", 1), ("{o}", 1), ("{B}", 0.3),
]
_DOUBLE = [
    ("{o} and {p} on {b}", 4), ("{o} next to {p} on {b}", 2), ("{B} with {o} and {p}", 2),
    ("{o} beside {p}", 1), ("{o} and {p}", 1), ("{o} near {p}, on {b}", 1),
    ("photo of {o} and {p} on {b}", 1), ("{o} with {p} lying on {b}", 1),
]
_OBJECT = [("{o}", 5), ("close-up of {o}", 1), ("photo of {o}", 1), ("{o} on {b}", 3), ("{o} lying on {b}", 1)]


def _pick(rng: np.random.Generator, items: list) -> Any:
    return items[int(rng.integers(len(items)))]


def _weighted(rng: np.random.Generator, table: list[tuple[str, float]]) -> str:
    w = np.asarray([t[1] for t in table], float)
    return table[int(rng.choice(len(table), p=w / w.sum()))][0]


def _article(phrase: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.12:
        return "one " + phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(world: World, obj: dict[str, Any], rng: np.random.Generator, article: bool = True) -> str:
    """E.g. "a small red striped star", "a star with dots", "a blue lozenge"."""
    shape = _pick(rng, world.spec("shape", obj["shape"])["phrases"])
    pat = world.spec("pattern", obj["pattern"])
    plain = pat.get("draw") == "plain"
    words: list[str] = []
    if rng.random() < 0.45:
        words.append(_pick(rng, world.words("size", obj["size"])))
    if rng.random() < 0.88:
        words.append(_pick(rng, world.words("color", obj["color"])))
    suffix = ""
    if rng.random() < (0.35 if plain else 0.75):
        if pat.get("with") and rng.random() < 0.45:
            suffix = " " + _pick(rng, ["with", "with", "covered in", "decorated with"]) + " " + _pick(rng, pat["with"])
        else:
            words.append(_pick(rng, pat["adj"]))
    phrase = " ".join(words + [shape]) + suffix
    return _article(phrase, rng) if article else phrase


def background_phrase(world: World, background: str, rng: np.random.Generator) -> str:
    return _pick(rng, world.spec("background", background)["phrases"])


def _finish(text: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.2:
        text += "."
    return text


def scene_caption(world: World, scene: dict[str, Any], rng: np.random.Generator) -> str:
    """One caption of a whole scene. With two objects, sometimes only the main one is named."""
    objs = scene["objects"]
    b = background_phrase(world, scene["background"], rng)
    o = object_phrase(world, objs[0], rng)
    if len(objs) > 1 and rng.random() > 0.2:
        p = object_phrase(world, objs[1], rng)
        if rng.random() < 0.5:
            o, p = p, o
        text = _weighted(rng, _DOUBLE).format(o=o, p=p, b=b, B=b)
    else:
        text = _weighted(rng, _SINGLE).format(o=o, b=b, B=b)
    return _finish(text, rng)


def object_caption(world: World, scene: dict[str, Any], k: int, rng: np.random.Generator) -> str:
    """One caption of object ``k`` of a scene as seen in a crop around it."""
    o = object_phrase(world, scene["objects"][k], rng)
    b = background_phrase(world, scene["background"], rng)
    return _finish(_weighted(rng, _OBJECT).format(o=o, b=b), rng)


def scene_captions(world: World, scene: dict[str, Any], rng: np.random.Generator, k: int = 3) -> list[str]:
    """``k`` captions of one scene (may repeat when the scene is simple)."""
    return [scene_caption(world, scene, rng) for _ in range(k)]


def main_combo(scene: dict[str, Any]) -> tuple[str, str, str, str]:
    o = scene["objects"][0]
    return (o["shape"], o["color"], o["pattern"], scene["background"])


def vocabulary(world: World, probe_scenes: list[dict[str, Any]], seed: int, target: int = 24000,
               progress: Callable[[int, int, str], None] | None = None) -> list[str]:
    """At least ``target`` distinct captions (deterministic from ``seed``), in a fixed order.

    Half of the caption draws describe scenes drawn like the probe set (same world, another seed),
    half are distractors: scenes drawn uniformly, without the planted correlations, kept only when
    their main-object combination never occurs among ``probe_scenes``."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    in_probe = {main_combo(s) for s in probe_scenes}
    uniform = World.from_dict({**world.raw, "correlations": []})
    guard = 0
    while len(seen) < target:
        guard += 1
        if guard > 50 * target:  # pragma: no cover - a world too small to have that many captions
            raise RuntimeError(f"could only make {len(seen)} distinct captions")
        like = world.sample_scene(rng)
        for text in (scene_caption(world, like, rng), object_caption(world, like, 0, rng)):
            seen.setdefault(text, None)
        d = uniform.sample_scene(rng)
        if main_combo(d) not in in_probe:
            for text in (scene_caption(world, d, rng), object_caption(world, d, 0, rng)):
                seen.setdefault(text, None)
        if progress and guard % 2000 == 0:
            progress(min(len(seen), target), target, "vocabulary")
    return list(seen)
