"""Captions of demo scenes: varied natural English, like real alt-text.

Every attribute is named with the words of the world config (``words``/``phrases``/``adj``/
``with``), so a benchmark can match FALCON's words against :func:`falcon_core.demo.synonyms`.
Captions vary the synonyms, the word order (adjectives before the noun, "with stripes" after it,
the background first or last), add filler words (lying, resting, close-up, photo, ...) and
sometimes leave attributes out, as real captions do.

Every caption is built by one function, :func:`compose`, from the phrases of the objects it names
and, optionally, the background. The fillers (a prefix such as "photo of", a relation such as
"lying on") and the chance that the background is named are the same for every kind of caption,
so a crop's caption and a whole scene's caption carry each filler at the same rate, and no filler
becomes a concept of crops (or of scenes) by construction. Issue 7 measured the opposite before:
object captions said "lying on" twice as often as scene captions, and "lie" was the top word of
34 of 128 features.

Kinds:
- :func:`scene_caption`: the whole scene (its objects and the background);
- :func:`object_caption`: one object, as seen in a crop around it;
- :func:`pair_caption`: two objects, as seen in a crop around both;
- :func:`background_caption`: the background alone, as seen in a crop with no object;
- :func:`vocabulary`: the caption vocabulary of the demo world, >= 20,000 distinct captions made
  of captions of scenes drawn like the probe set plus *distractors*: captions of scenes whose
  main-object combination (shape, colour, pattern, background) never occurs in the probe set.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .world import World

# The fillers, shared by every kind of caption (see the module doc). Weights, not probabilities.
PREFIXES: list[tuple[str, float]] = [
    ("", 88), ("photo of ", 4), ("close-up of ", 4), ("a photo of ", 2), ("picture of ", 2),
]
BACKGROUND_NAMED_P = 0.7
"""The chance that a caption naming objects also names the background (every kind alike)."""
RELATIONS: list[tuple[str, float]] = [
    ("{o} on {b}", 52), ("{o} lying on {b}", 5), ("{o} resting on {b}", 5), ("{o} placed on {b}", 5),
    ("{o} sitting on {b}", 5), ("{o} against {b}", 5), ("{o} in front of {b}", 5), ("{o} over {b}", 4),
    ("{o} seen on {b}", 4), ("{B} with {o}", 10),
]
PAIRS: list[tuple[str, float]] = [("{o} and {p}", 6), ("{o} next to {p}", 2), ("{o} beside {p}", 1),
                                  ("{o} near {p}", 1)]
SCENE_BOTH_OBJECTS_P = 0.8
"""With two objects in a scene, the chance that its caption names both (else only the main one)."""


# Every choice consumes exactly one uniform draw, whatever is chosen from (lists of any length,
# empty options): two captions of scenes that differ in one value, made from generators in the same
# state, then differ only in the words of that value (the CLIP's hard negatives rely on it).


def _pick(rng: np.random.Generator, items: Sequence) -> Any:
    return items[min(int(rng.random() * len(items)), len(items) - 1)]


def _weighted(rng: np.random.Generator, table: list[tuple[str, float]]) -> str:
    w = np.cumsum([t[1] for t in table], dtype=float)
    return table[min(int(np.searchsorted(w, rng.random() * w[-1], side="right")), len(table) - 1)][0]


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
    named, use_with = rng.random() < (0.35 if plain else 0.75), rng.random() < 0.45
    joiner, u_with, u_adj = _pick(rng, ["with", "with", "covered in", "decorated with"]), rng.random(), rng.random()
    if named:
        if pat.get("with") and use_with:
            suffix = " " + joiner + " " + pat["with"][min(int(u_with * len(pat["with"])), len(pat["with"]) - 1)]
        else:
            words.append(pat["adj"][min(int(u_adj * len(pat["adj"])), len(pat["adj"]) - 1)])
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


def compose(objects: Sequence[str], background: str | None, rng: np.random.Generator) -> str:
    """The one caption builder: object phrases (0, 1 or 2) and a background phrase (or None).

    A background given with objects is named with probability :data:`BACKGROUND_NAMED_P` through
    one of :data:`RELATIONS`; a prefix from :data:`PREFIXES` is added to every caption. The random
    draws are the same whatever is passed, so kinds cannot differ in their fillers."""
    prefix = _weighted(rng, PREFIXES)
    named = rng.random() < BACKGROUND_NAMED_P
    relation = _weighted(rng, RELATIONS)
    pair = _weighted(rng, PAIRS)
    if not objects:
        if background is None:
            raise ValueError("a caption needs an object or a background")
        return _finish(prefix + background, rng)
    o = objects[0] if len(objects) == 1 else pair.format(o=objects[0], p=objects[1])
    text = relation.format(o=o, b=background, B=background) if (background is not None and named) else o
    return _finish(prefix + text, rng)


def scene_caption(world: World, scene: dict[str, Any], rng: np.random.Generator) -> str:
    """One caption of a whole scene. With two objects, sometimes only the main one is named."""
    objs = scene["objects"]
    b = background_phrase(world, scene["background"], rng)
    phrases = [object_phrase(world, objs[0], rng)]
    if len(objs) > 1 and rng.random() < SCENE_BOTH_OBJECTS_P:
        phrases.append(object_phrase(world, objs[1], rng))
        if rng.random() < 0.5:
            phrases.reverse()
    return compose(phrases, b, rng)


def object_caption(world: World, scene: dict[str, Any], k: int, rng: np.random.Generator) -> str:
    """One caption of object ``k`` of a scene as seen in a crop around it."""
    o = object_phrase(world, scene["objects"][k], rng)
    return compose([o], background_phrase(world, scene["background"], rng), rng)


def pair_caption(world: World, scene: dict[str, Any], rng: np.random.Generator) -> str:
    """One caption of both objects of a two-object scene, as seen in a crop around both."""
    phrases = [object_phrase(world, o, rng) for o in scene["objects"][:2]]
    if rng.random() < 0.5:
        phrases.reverse()
    return compose(phrases, background_phrase(world, scene["background"], rng), rng)


def background_caption(world: World, scene: dict[str, Any], rng: np.random.Generator) -> str:
    """One caption of the background alone (a crop that holds no object)."""
    return compose([], background_phrase(world, scene["background"], rng), rng)


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
    uniform = world.uncorrelated()
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
