"""The demo world: a config of attributes with known values, a scene sampler and a renderer.

A *world* is a small JSON file (``assets/world.json`` is the default) that lists, for each of the
five attributes ``shape``, ``color``, ``pattern``, ``size`` (of each object) and ``background``
(of the scene), the values it can take, how each value is drawn and the words that name it, plus
planted correlations (e.g. "stars are on grass 80% of the time").

A *scene* is a plain, JSON-serialisable dict::

    {"seed": 1234, "background": "grass",
     "objects": [{"shape": "star", "color": "red", "pattern": "striped", "size": "large",
                  "cx": 0.5, "cy": 0.45, "r": 0.26, "angle": 33.0}, ...]}

The first object is the *main* object: the backbone's class label is its ``class_attribute``
(the shape by default) and the planted correlations apply to it. A second object, when there is
one, is always of the smallest size, so a scene whose main object is small too is genuinely
ambiguous (real failures for Stage 9). Positions and radii are fractions of the image side, so a
scene renders at any size; every random choice of the rendering (texture, pattern phase, colour
jitter, noise) comes from the scene's own ``seed``. Same seed, same scene, same pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import FalconError

GENERATOR_VERSION = 2
"""Bump when sampling, rendering or captions change: it is part of every cache key of generated data.

2: captions share one filler table across kinds (issue 7); validated configs; ``uncorrelated()``."""

OBJECT_ATTRIBUTES = ("shape", "color", "pattern", "size")
SCENE_ATTRIBUTES = ("background",)
ATTRIBUTES = OBJECT_ATTRIBUTES + SCENE_ATTRIBUTES
FUNCTION_WORDS = frozenset({"a", "an", "the", "of", "with"})
ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_WORLD = ASSETS_DIR / "world.json"
ALT_WORLD = ASSETS_DIR / "world_alt.json"


class WorldConfigError(FalconError):
    """The world config is malformed."""


# --------------------------------------------------------------------------------------------
# shapes: lists of (polygon in unit coordinates, fill 255 or 0) drawn in order; radius ~1
# --------------------------------------------------------------------------------------------


def _circle_pts(cx: float = 0.0, cy: float = 0.0, r: float = 1.0, n: int = 48) -> list:
    return [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)) for k in range(n)]


def _regular(n: int, r: float = 1.0, phase: float = -90.0) -> list:
    return [
        (r * math.cos(math.radians(phase + 360.0 * k / n)), r * math.sin(math.radians(phase + 360.0 * k / n)))
        for k in range(n)
    ]


def _star(points: int = 5, inner: float = 0.42) -> list:
    out = []
    for k in range(2 * points):
        rr = 1.0 if k % 2 == 0 else inner
        a = math.radians(-90.0 + 180.0 * k / points)
        out.append((rr * math.cos(a), rr * math.sin(a)))
    return out


def _heart() -> list:
    pts = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -(y + 2.5) / 17.0))
    return pts


_W = 0.32
SHAPES: dict[str, list] = {
    "circle": [(_circle_pts(r=0.92), 255)],
    "square": [([(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)], 255)],
    "triangle": [(_regular(3, 1.0), 255)],
    "star": [(_star(5, 0.42), 255)],
    "cross": [([(-_W, -0.95), (_W, -0.95), (_W, -_W), (0.95, -_W), (0.95, _W), (_W, _W), (_W, 0.95),
                (-_W, 0.95), (-_W, _W), (-0.95, _W), (-0.95, -_W), (-_W, -_W)], 255)],
    "heart": [(_heart(), 255)],
    "hexagon": [(_regular(6, 0.95, 0.0), 255)],
    "pentagon": [(_regular(5, 0.95), 255)],
    "diamond": [([(0.0, -1.0), (0.56, 0.0), (0.0, 1.0), (-0.56, 0.0)], 255)],
    "crescent": [(_circle_pts(r=0.95), 255), (_circle_pts(0.42, -0.18, 0.8), 0)],
    "ring": [(_circle_pts(r=0.95), 255), (_circle_pts(r=0.5), 0)],
    "arrow": [([(-0.95, -0.25), (0.2, -0.25), (0.2, -0.62), (0.95, 0.0), (0.2, 0.62), (0.2, 0.25),
                (-0.95, 0.25)], 255)],
}
# hearts and arrows read best upright-ish; everything else rotates freely
ROTATION_RANGE = {"heart": 35.0, "arrow": 180.0}
PATTERNS = ("plain", "stripes", "dots", "checker")
TEXTURES = ("blades", "bricks", "waves", "speckle", "planks", "stones", "clouds", "tiles")


# --------------------------------------------------------------------------------------------
# the config
# --------------------------------------------------------------------------------------------


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _tokens(phrase: str) -> list[str]:
    return phrase.lower().split()


@dataclass
class World:
    """A validated world config. Build it with :func:`load_world` or :meth:`World.from_dict`."""

    name: str
    image_size: int
    two_objects_p: float
    class_attribute: str
    attributes: dict[str, dict[str, dict[str, Any]]]
    correlations: list[dict[str, Any]]
    description: str = ""
    path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | None = None) -> "World":
        _validate(data, path)
        return cls(
            name=str(data["name"]),
            image_size=int(data.get("image_size", 64)),
            two_objects_p=float(data.get("two_objects_p", 0.35)),
            class_attribute=str(data.get("class_attribute", "shape")),
            attributes={a: dict(data["attributes"][a]) for a in ATTRIBUTES},
            correlations=list(data.get("correlations", [])),
            description=str(data.get("description", "")),
            path=path,
            raw=data,
        )

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of the config (independent of formatting and path)."""
        return hashlib.sha256(_canonical(self.raw).encode()).hexdigest()

    def uncorrelated(self) -> "World":
        """The same world without its planted correlations (every attribute drawn independently):
        what the demo CLIP and the second demo backbone are trained on."""
        return World.from_dict({**self.raw, "correlations": []}, self.path)

    def values(self, attribute: str) -> list[str]:
        return list(self.attributes[attribute])

    @property
    def class_names(self) -> list[str]:
        return self.values(self.class_attribute)

    def spec(self, attribute: str, value: str) -> dict[str, Any]:
        return self.attributes[attribute][value]

    def words(self, attribute: str, value: str) -> list[str]:
        return list(self.attributes[attribute][value]["words"])

    # ---- sampling ---------------------------------------------------------------------------
    def _sample_object(self, rng: np.random.Generator) -> dict[str, Any]:
        obj = {}
        for a in OBJECT_ATTRIBUTES:
            vals = self.values(a)
            obj[a] = vals[int(rng.integers(len(vals)))]
        return obj

    def _smallest_size(self) -> str:
        return min(self.values("size"), key=lambda v: self.spec("size", v)["scale"][0])

    def _place(self, obj: dict[str, Any], rng: np.random.Generator) -> None:
        lo, hi = self.spec("size", obj["size"])["scale"]
        r = float(rng.uniform(lo, hi))
        m = r + 0.02
        obj["r"] = round(r, 5)
        obj["cx"] = round(float(rng.uniform(m, 1.0 - m)), 5)
        obj["cy"] = round(float(rng.uniform(m, 1.0 - m)), 5)
        span = ROTATION_RANGE.get(self.spec("shape", obj["shape"])["draw"], 180.0)
        obj["angle"] = round(float(rng.uniform(-span, span)), 3)

    def sample_scene(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random scene (a dict, see the module doc). Consumes a fixed pattern of draws."""
        seed = int(rng.integers(0, 2**31 - 1))
        main = self._sample_object(rng)
        bgs = self.values("background")
        scene: dict[str, Any] = {"seed": seed, "background": bgs[int(rng.integers(len(bgs)))]}
        # planted correlations (on the main object); a draw is consumed per rule, always
        for rule in self.correlations:
            u = float(rng.random())
            holds = all((scene if a == "background" else main)[a] == v for a, v in rule["if"].items())
            if holds and u < float(rule["p"]):
                for a, v in rule["then"].items():
                    (scene if a == "background" else main)[a] = v
        self._place(main, rng)
        objects = [main]
        two = float(rng.random()) < self.two_objects_p
        second = self._sample_object(rng)
        second["size"] = self._smallest_size()
        self._place(second, rng)
        if two:
            for _ in range(30):
                d = math.hypot(second["cx"] - main["cx"], second["cy"] - main["cy"])
                if d > main["r"] + second["r"] + 0.02:
                    objects.append(second)
                    break
                self._place(second, rng)
        scene["objects"] = objects
        return scene

    def sample_scenes(self, n: int, seed: int) -> list[dict[str, Any]]:
        rng = np.random.default_rng(seed)
        return [self.sample_scene(rng) for _ in range(n)]

    def label(self, scene: dict[str, Any]) -> int:
        return self.class_names.index(scene["objects"][0][self.class_attribute])

    # ---- rendering --------------------------------------------------------------------------
    def render(self, scene: dict[str, Any], size: int | None = None) -> np.ndarray:
        """The scene as a uint8 (S, S, 3) array. Deterministic from the scene dict alone."""
        return render(self, scene, size)


MAX_VALUES = 32
"""At most this many values per attribute (a world is a small, hand-written file)."""
MAX_CONFIG_BYTES = 1 << 20
"""A world config file larger than this is refused before it is parsed."""


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    """A finite JSON number (not a bool; an integer too large for a float is not one)."""
    if _is_int(x):
        return abs(x) <= 2 ** 53
    return isinstance(x, float) and math.isfinite(x)


def _short(x: Any, n: int = 60) -> str:
    """A bounded repr for messages (a hostile config may hold huge or deeply nested values)."""
    try:
        r = repr(x)
    except (RecursionError, ValueError):  # pragma: no cover - repr of JSON values does not fail
        r = f"<{type(x).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


def _validate(data: Any, path: str | None) -> None:
    """Raise :class:`WorldConfigError` (and nothing else) unless ``data`` is a valid world config.

    Every value is type-checked before it is used, so a config of the wrong shape (a list where an
    object belongs, numbers as strings, NaN, huge numbers, deep nesting) gets a message that says
    which key is wrong, never a TypeError from deeper down."""
    where = f" in {path}" if path else ""

    def fail(msg: str) -> None:
        raise WorldConfigError(f"Invalid world config{where}: {msg}",
                               "Compare it with assets/world.json, the default world.")

    def str_list(x: Any, what: str, required: bool = True) -> list[str]:
        if not isinstance(x, list) or not all(isinstance(s, str) and s.strip() for s in x):
            fail(f"{what} must be a list of non-empty strings, not {_short(x)}.")
        if required and not x:
            fail(f"{what} must not be empty.")
        return x

    if not isinstance(data, dict):
        fail(f"the top level must be a JSON object, not {type(data).__name__}.")
    try:  # the hash is the canonical JSON of everything: it must exist (no absurd nesting)
        _canonical(data)
    except (RecursionError, ValueError, TypeError) as e:
        fail(f"it cannot be serialised canonically ({type(e).__name__}: nested too deeply or not JSON).")
    for key in ("name", "attributes"):
        if key not in data:
            fail(f"missing key {key!r}.")
    if not isinstance(data["name"], str) or not data["name"].strip() or len(data["name"]) > 200:
        fail(f"'name' must be a non-empty string of at most 200 characters, not {_short(data['name'])}.")
    if not isinstance(data.get("description", ""), str):
        fail("'description' must be a string.")
    size = data.get("image_size", 64)
    if not _is_int(size) or not 32 <= size <= 256:
        fail(f"image_size must be an integer in 32..256, not {_short(size)}.")
    p2 = data.get("two_objects_p", 0.35)
    if not _is_number(p2) or not 0.0 <= p2 <= 1.0:
        fail(f"two_objects_p must be a number in [0, 1], not {_short(p2)}.")
    attrs = data["attributes"]
    if not isinstance(attrs, dict):
        fail("'attributes' must be an object.")
    missing = [a for a in ATTRIBUTES if a not in attrs]
    extra = [_short(a, 30) for a in attrs if a not in ATTRIBUTES]
    if missing or extra:
        fail(f"'attributes' must have exactly {', '.join(ATTRIBUTES)} "
             f"(missing: {missing or 'none'}, unknown: {extra or 'none'}).")
    ca = data.get("class_attribute", "shape")
    if not isinstance(ca, str) or ca not in OBJECT_ATTRIBUTES:
        fail(f"class_attribute must be one of {OBJECT_ATTRIBUTES}, not {_short(ca)}.")
    owner: dict[str, str] = {}
    for a in ATTRIBUTES:
        vals = attrs[a]
        if not isinstance(vals, dict) or not 2 <= len(vals) <= MAX_VALUES:
            fail(f"attribute {a!r} needs an object of 2..{MAX_VALUES} values.")
        for v, spec in vals.items():
            tag = f"{a}={_short(v, 30)}"
            if not isinstance(v, str) or not v.strip() or len(v) > 60:
                fail(f"{tag}: a value name must be a non-empty string of at most 60 characters.")
            if not isinstance(spec, dict):
                fail(f"{tag}: the value's spec must be an object.")
            words = str_list(spec.get("words"), f"{tag}: 'words' (the value's synonyms)")
            for w in words:
                if w != w.lower() or w.split() != [w]:
                    fail(f"{tag}: synonym {_short(w)} must be one lower-case word.")
                if w in owner and owner[w] != tag:
                    fail(f"the word {w!r} names both {owner[w]} and {tag}; synonyms must be unambiguous.")
                owner[w] = tag
            allowed = set(words) | FUNCTION_WORDS
            for key in ("phrases", "adj", "with"):
                if key not in spec:
                    continue
                for ph in str_list(spec[key], f"{tag}: {key!r}", required=False):
                    toks = _tokens(ph)
                    bad = [t for t in toks if t not in allowed]
                    if bad:
                        fail(f"{tag}: phrase {_short(ph)} uses {_short(bad)}, which are not among its words.")
                    if not set(toks) & set(words):
                        fail(f"{tag}: phrase {_short(ph)} names none of the value's words.")
            if a == "shape":
                draw = spec.get("draw")
                if not isinstance(draw, str) or draw not in SHAPES:
                    fail(f"{tag}: 'draw' must be one of {sorted(SHAPES)}, not {_short(draw)}.")
                if not spec.get("phrases"):
                    fail(f"{tag}: 'phrases' (how captions name the shape) is required.")
            elif a == "color":
                rgb = spec.get("rgb")
                if not (isinstance(rgb, list) and len(rgb) == 3 and all(_is_int(c) and 0 <= c <= 255 for c in rgb)):
                    fail(f"{tag}: 'rgb' must be three integers in 0..255, not {_short(rgb)}.")
            elif a == "pattern":
                draw = spec.get("draw")
                if not isinstance(draw, str) or draw not in PATTERNS:
                    fail(f"{tag}: 'draw' must be one of {PATTERNS}, not {_short(draw)}.")
                if not spec.get("adj"):
                    fail(f"{tag}: 'adj' (adjectives for captions) is required.")
            elif a == "size":
                sc = spec.get("scale")
                if not (isinstance(sc, list) and len(sc) == 2 and all(_is_number(x) for x in sc)
                        and 0.03 <= sc[0] < sc[1] <= 0.45):
                    fail(f"{tag}: 'scale' must be two numbers [lo, hi] with 0.03 <= lo < hi <= 0.45 "
                         f"(radius / image side), not {_short(sc)}.")
            elif a == "background":
                tex = spec.get("texture")
                if not isinstance(tex, str) or tex not in TEXTURES:
                    fail(f"{tag}: 'texture' must be one of {TEXTURES}, not {_short(tex)}.")
                cols = spec.get("colors")
                if not (isinstance(cols, list) and len(cols) == 2 and all(
                        isinstance(c, list) and len(c) == 3 and all(_is_int(x) and 0 <= x <= 255 for x in c)
                        for c in cols)):
                    fail(f"{tag}: 'colors' must be two RGB triples of integers in 0..255, not {_short(cols)}.")
                if not spec.get("phrases"):
                    fail(f"{tag}: 'phrases' (how captions name the background) is required.")
    corr = data.get("correlations", [])
    if not isinstance(corr, list):
        fail("'correlations' must be a list.")
    for k, rule in enumerate(corr):
        if not isinstance(rule, dict) or not isinstance(rule.get("if"), dict) or not isinstance(rule.get("then"), dict):
            fail(f"correlation #{k}: needs 'if' and 'then' objects.")
        if not rule["then"] or not rule["if"]:
            fail(f"correlation #{k}: 'if' and 'then' must not be empty.")
        for part in ("if", "then"):
            for a, v in rule[part].items():
                if a not in ATTRIBUTES or not isinstance(v, str) or v not in attrs[a]:
                    fail(f"correlation #{k}: {_short(a, 30)}={_short(v, 30)} is not an attribute value of this world.")
        p = rule.get("p")
        if not _is_number(p) or not 0.0 <= p <= 1.0:
            fail(f"correlation #{k}: 'p' must be a number in [0, 1], not {_short(p)}.")


def load_world(path: str | Path | None = None) -> World:
    """Load and validate a world config (default: ``assets/world.json``). ``"alt"`` and
    ``"default"`` name the two shipped worlds. Raises :class:`WorldConfigError` and nothing else."""
    if path is None or str(path) == "default":
        path = DEFAULT_WORLD
    elif str(path) == "alt":
        path = ALT_WORLD
    try:
        p = Path(path)
        if not p.is_file():
            raise WorldConfigError(f"World config not found: {_short(str(p), 300)}",
                                   "Give the path of a world JSON file.")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise WorldConfigError(f"World config {p} is larger than {MAX_CONFIG_BYTES // 1024} KiB; "
                                   "a world config is a small hand-written file.")
        raw = p.read_bytes()
    except (OSError, ValueError, TypeError) as e:  # unreadable, NUL in the path, not a path
        raise WorldConfigError(f"World config {_short(str(path), 300)} cannot be read: {e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WorldConfigError(f"World config {p} is not UTF-8 text (byte {e.start}).",
                               "Save it as UTF-8 JSON.") from e
    try:
        data = json.loads(text)
    except RecursionError as e:
        raise WorldConfigError(f"World config {p} is nested too deeply to be a world config.") from e
    except ValueError as e:  # JSONDecodeError, and integers too long to convert
        raise WorldConfigError(f"World config {p} is not valid JSON: {_short(str(e), 200)}") from e
    return World.from_dict(data, str(p))


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    g = rng.random((cells + 1, cells + 1)).astype(np.float32)
    im = Image.fromarray(g, mode="F").resize((n, n), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32)


def _lerp(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    return c1 * (1.0 - t[..., None]) + c2 * t[..., None]


def _texture(kind: str, c1: np.ndarray, c2: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    if kind == "blades":
        base = _lerp(c1, c2, 0.35 + 0.4 * _smooth_noise(rng, n, 4))
        im = Image.fromarray(base.clip(0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        count = n * n // 28
        xs, ys = rng.uniform(-4, n + 4, count), rng.uniform(-4, n + 8, count)
        ln = rng.uniform(0.05, 0.11, count) * n
        ang = np.radians(rng.normal(0, 18, count))
        t = rng.random(count)
        jit = rng.normal(0, 10, (count, 3))
        for k in range(count):
            c = tuple(int(v) for v in np.clip(c1 * (1 - t[k]) + c2 * t[k] + jit[k], 0, 255))
            d.line([(xs[k], ys[k]), (xs[k] + ln[k] * math.sin(ang[k]), ys[k] - ln[k] * math.cos(ang[k]))],
                   fill=c, width=2 if n >= 96 else 1)
        return np.asarray(im, dtype=np.float32)
    if kind in ("bricks", "tiles"):
        bh = n / rng.uniform(6.0, 9.0) if kind == "bricks" else n / rng.uniform(3.5, 5.5)
        bw = bh * (rng.uniform(2.0, 2.6) if kind == "bricks" else 1.0)
        py, px = rng.uniform(0, bh), rng.uniform(0, bw)
        row = np.floor((yy + py) / bh)
        shift = (row % 2) * bw / 2 if kind == "bricks" else 0.0
        xs = xx + px + shift
        col = np.floor(xs / bw)
        tone = rng.uniform(0.8, 1.12, (int(row.max()) + 2, int(col.max()) + 2)).astype(np.float32)
        body = c1[None, None] * tone[row.astype(int), col.astype(int)][..., None]
        mort = max(1.5, bh / 7.0)
        joint = ((yy + py) % bh < mort) | (xs % bw < mort)
        out = np.where(joint[..., None], c2[None, None], body)
        return out + rng.normal(0, 6, (n, n, 1)).astype(np.float32)
    if kind == "waves":
        th = rng.uniform(-0.35, 0.35)
        u = xx * math.cos(th) + yy * math.sin(th)
        v = -xx * math.sin(th) + yy * math.cos(th)
        lam = n / rng.uniform(5.0, 8.0)
        t = v / lam + 0.25 * np.sin(2 * math.pi * u / (lam * rng.uniform(2.0, 3.5)) + rng.uniform(0, 6.3))
        w = (0.5 + 0.5 * np.sin(2 * math.pi * t)) ** 3
        w = np.clip(w + 0.25 * (_smooth_noise(rng, n, 5) - 0.5), 0, 1)
        return _lerp(c1, c2, w) + rng.normal(0, 4, (n, n, 1)).astype(np.float32)
    if kind == "speckle":
        base = _lerp(c1, c2, 0.35 * _smooth_noise(rng, n, 3))
        specks = (rng.random((n, n)) ** 4).astype(np.float32)
        out = _lerp(base, np.broadcast_to(c2, base.shape), specks)
        th = rng.uniform(0, math.pi)
        rip = np.sin(2 * math.pi * (xx * math.cos(th) + yy * math.sin(th)) / (n / 5.0))
        return out + (6.0 * rip)[..., None] + rng.normal(0, 7, (n, n, 1)).astype(np.float32)
    if kind == "planks":
        vertical = rng.random() < 0.5
        a, b = (xx, yy) if vertical else (yy, xx)
        pw = n / rng.uniform(3.5, 5.5)
        off = rng.uniform(0, pw)
        idx = np.floor((a + off) / pw)
        tone = rng.uniform(0.85, 1.12, int(idx.max()) + 2).astype(np.float32)[idx.astype(int)]
        grain = 0.5 + 0.5 * np.sin(2 * math.pi * ((a + off) % pw) / (pw / rng.uniform(2.5, 4.0))
                                   + 3.0 * _smooth_noise(rng, n, 3) + 0.02 * b)
        out = _lerp(c1, c2, 0.6 * grain) * tone[..., None]
        seam = ((a + off) % pw) < 1.5
        return np.where(seam[..., None], c2[None, None] * 0.6, out)
    if kind == "stones":
        im = Image.new("RGB", (n, n), tuple(int(v) for v in c2 * 0.8))
        d = ImageDraw.Draw(im)
        count = n * n // 45
        for _ in range(count):
            x, y = rng.uniform(-3, n + 3, 2)
            rx, ry = rng.uniform(0.02, 0.055, 2) * n
            t = rng.random()
            c = np.clip((c1 * (1 - t) + c2 * t) * rng.uniform(0.8, 1.2), 0, 255)
            d.ellipse([x - rx, y - ry, x + rx, y + ry], fill=tuple(int(v) for v in c))
        return np.asarray(im, dtype=np.float32) + rng.normal(0, 4, (n, n, 1)).astype(np.float32)
    if kind == "clouds":
        w = 0.6 * _smooth_noise(rng, n, 3) + 0.3 * _smooth_noise(rng, n, 7) + 0.1 * _smooth_noise(rng, n, 15)
        w = np.clip((w - 0.35) * 2.2, 0, 1)
        return _lerp(c1, c2, w) + rng.normal(0, 3, (n, n, 1)).astype(np.float32)
    raise ValueError(kind)  # pragma: no cover - validated


def _shape_mask(draw_name: str, cx: float, cy: float, r: float, angle: float, n: int) -> np.ndarray:
    im = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(im)
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    for poly, fill in SHAPES[draw_name]:
        pts = [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in poly]
        d.polygon(pts, fill=fill)
    return np.asarray(im, dtype=np.float32) / 255.0


def _pattern(kind: str, u: np.ndarray, v: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    pu, pv = rng.uniform(0, 1, 2)
    if kind == "plain":
        return np.zeros_like(u)
    if kind == "stripes":
        return (((u / period + pu) % 1.0) < 0.5).astype(np.float32)
    if kind == "dots":
        fu, fv = (u / period + pu) % 1.0 - 0.5, (v / period + pv) % 1.0 - 0.5
        return ((fu * fu + fv * fv) < 0.28**2).astype(np.float32)
    if kind == "checker":
        c = period * 0.6
        return ((np.floor(u / c + pu) + np.floor(v / c + pv)) % 2).astype(np.float32)
    raise ValueError(kind)  # pragma: no cover - validated


def _second_colour(rgb: np.ndarray) -> np.ndarray:
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return rgb * 0.42 if lum > 100 else rgb + (255.0 - rgb) * 0.55


def render(world: World, scene: dict[str, Any], size: int | None = None) -> np.ndarray:
    """Render ``scene`` as a uint8 (S, S, 3) array (S = ``size`` or the world's image size).

    Drawn at twice the size and box-filtered down (anti-aliasing); every random choice comes from
    ``scene["seed"]``."""
    S = int(size or world.image_size)
    n = 2 * S
    rng = np.random.default_rng(int(scene["seed"]))
    bg = world.spec("background", scene["background"])
    c1, c2 = (np.asarray(c, np.float32) for c in bg["colors"])
    canvas = _texture(bg["texture"], c1, c2, n, rng).astype(np.float32)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    for obj in scene["objects"]:
        cx, cy, r = obj["cx"] * n, obj["cy"] * n, obj["r"] * n
        draw = world.spec("shape", obj["shape"])["draw"]
        m = _shape_mask(draw, cx, cy, r, obj["angle"], n)
        # soft shadow, down-right
        sh = np.roll(np.roll(m, max(1, n // 64), 0), max(1, n // 64), 1)
        canvas *= (1.0 - 0.35 * sh)[..., None]
        rgb = np.clip(np.asarray(world.spec("color", obj["color"])["rgb"], np.float32) + rng.normal(0, 9, 3), 0, 255)
        a = math.radians(obj["angle"])
        u = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
        v = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
        pat = _pattern(world.spec("pattern", obj["pattern"])["draw"], u, v, n / 8.0, rng)
        fill = _lerp(rgb, _second_colour(rgb), pat)
        canvas = canvas * (1.0 - m[..., None]) + fill * m[..., None]
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).resize((S, S), Image.BOX)
    out = np.asarray(img, dtype=np.float32) * rng.uniform(0.88, 1.12)
    out += rng.normal(0, rng.uniform(2.0, 7.0), out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def object_box(obj: dict[str, Any], size: int, margin: float = 0.0) -> tuple[int, int, int, int]:
    """Pixel bounding box (x0, y0, x1, y1; x1/y1 exclusive) of an object, grown by ``margin``
    (a fraction of its radius), clipped to the image."""
    r = obj["r"] * (1.0 + margin) * size
    cx, cy = obj["cx"] * size, obj["cy"] * size
    x0, y0 = max(0, int(math.floor(cx - r))), max(0, int(math.floor(cy - r)))
    x1, y1 = min(size, int(math.ceil(cx + r))), min(size, int(math.ceil(cy + r)))
    return x0, y0, x1, y1


def sample_scene(world: World, rng: np.random.Generator) -> dict[str, Any]:
    return world.sample_scene(rng)
