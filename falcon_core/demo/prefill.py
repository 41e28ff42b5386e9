"""Results of the default demo world shipped in ``assets/prefill/``, so the app's first start does
not compute them (issue 9: "the app feels instant on the demo world").

What a fresh clone would otherwise compute before it can show the first explanation (2 cores):
Stage 1 over the 5,000 probe scenes, the CLIP text embeddings of the 24,000 captions, every
caption's concepts (the concept table: spaCy over every caption) and their document frequencies,
the CLIP embeddings of every probe view (the faithfulness score), and the explanations (with their images' GradCAM maps) of the features the
Failures page shows first (its first misclassified image, three features per side: five or so
never-seen explanations on its first click). They are small and deterministic, so they ship, each
as the exact cache file the pipeline would write (gzip-compressed), with a manifest
(``manifest.json``) that records for each one:

* ``key``: the disk-cache key the pipeline computes for it now (it hashes the fingerprints of the
  models' weights, the probe set, the vocabulary and the concept extraction, the pipeline version
  and the cache format);
* ``source``: what it came from, in words a person can check: the sha256 of the demo backbone's
  and CLIP's weight files, the world config's hash, the probe set's size and seed, the generator
  version, the vocabulary's fingerprint, the concept extraction's, and ``code``: the sha256 of
  the source files that compute it (:data:`CODE`);
* ``sha256``: of the entry's bytes.

:func:`install` (called when a demo workspace opens) copies an entry into the cache only when its
key, its source and its bytes all match what this checkout would compute from; anything else is
ignored with a warning in the log (``falcon_core.demo.prefill``), and the pipeline computes the
result as it always did. So a rebuilt demo CLIP, an edited world, a changed Stage 1 or a damaged
file can never show a stale result. The shipped vocabulary (the captions) is checked the same
way by :func:`shipped_captions`.

``python -m falcon_core.demo prefill`` computes everything again in a fresh cache (nothing shipped
is reused) and rewrites ``assets/prefill/``; ``--check`` says which entries this checkout would use.
Set ``FALCON_PREFILL=off`` to ignore the shipped results.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import FalconError
from .world import ASSETS_DIR, GENERATOR_VERSION, load_world

log = logging.getLogger(__name__)

PREFILL_DIR = ASSETS_DIR / "prefill"
MANIFEST_FILE = "manifest.json"
FORMAT = 1
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # falcon_core/

# The source files (relative to falcon_core/) whose code computes each entry: their sha256 is
# part of the entry's source, so a change to any of them retires the shipped entry.
CODE: dict[str, tuple[str, ...]] = {
    "vocabulary": ("demo/captions.py", "demo/world.py", "demo/build.py"),
    "representations": ("stages/representations.py", "models/backbones.py", "demo/backbone.py",
                        "demo/world.py", "demo/scene_probe.py", "representation_store.py"),
    "text_embeddings": ("models/clip.py", "demo/clip_model.py", "data/vocabulary.py"),
    "concept_table": ("stages/concepts.py", "data/vocabulary.py"),
    "document_frequency": ("stages/concepts.py", "data/vocabulary.py"),
    "view_embeddings": ("calibration.py", "models/clip.py", "demo/clip_model.py",
                        "models/backbones.py", "demo/world.py", "demo/scene_probe.py"),
}
# The explanations of the features the Failures page shows first (its first misclassified probe
# image, FAILURE_K features per side, the workspace's default settings): an explanation is
# computed by most of the library, so every module that can change one is in its code.
FAILURES = "failure_explanations"
FAILURE_K = 3  # the Failures page's default "Features per side"
_NOT_EXPLAINING = ("bench/", "demo/prefill.py", "demo/report.py", "demo/__main__.py",
                   "demo/build.py", "__main__.py", "cli.py", "report.py", "compare.py",
                   "cache_housekeeping.py", "cache_verify.py")
CODE[FAILURES] = tuple(sorted(
    str(q.relative_to(PACKAGE_DIR)) for q in PACKAGE_DIR.rglob("*.py")
    if not str(q.relative_to(PACKAGE_DIR)).startswith(_NOT_EXPLAINING)))
# Disk-cache entries (name -> namespace, file suffix), in the order they are computed.
CACHE_ENTRIES: dict[str, tuple[str, str]] = {
    "representations": ("representations", ".npy"),
    "text_embeddings": ("text_embeddings", ".npy"),
    "concept_table": ("concept_table", ".json"),
    "document_frequency": ("document_frequency", ".json"),
    "view_embeddings": ("view_embeddings", ".npy"),
}
# Which parts of the workspace each entry depends on, and the config fields that choose a part.
USES: dict[str, tuple[str, ...]] = {
    "representations": ("backbone", "probe"),
    "text_embeddings": ("clip", "vocabulary"),
    "concept_table": ("vocabulary",),
    "document_frequency": ("vocabulary",),
    "view_embeddings": ("backbone", "probe", "clip"),
    FAILURES: ("backbone", "probe", "clip", "vocabulary"),
}
PART_FIELDS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone", "weights", "layer", "token_pool", "world"),
    "probe": ("probe", "world", "seed", "probe_size"),
    "clip": ("clip", "clip_pretrained", "world"),
    "vocabulary": ("vocabulary", "world"),
}


def enabled() -> bool:
    return os.environ.get("FALCON_PREFILL", "").strip().lower() not in ("off", "0", "no", "false")


def code_version(name: str) -> str:
    """sha256 over the paths and contents of the source files that compute entry ``name``."""
    h = hashlib.sha256()
    for rel in CODE[name]:
        h.update(rel.encode() + b"\0")
        h.update((PACKAGE_DIR / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(directory: Path | str | None = None) -> Optional[dict[str, Any]]:
    p = Path(directory or PREFILL_DIR) / MANIFEST_FILE
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


def _read_entry(directory: Path, rec: dict[str, Any]) -> bytes:
    """The shipped bytes of an entry, checked against the manifest's sha256 (ValueError)."""
    data = gzip.decompress((directory / str(rec["file"])).read_bytes())
    if _sha256(data) != rec.get("sha256"):
        raise ValueError("its bytes do not match the manifest's sha256 (damaged or edited)")
    return data


def _diff(shipped: dict[str, Any], now: dict[str, Any]) -> str:
    """The parts of a source that differ, in words."""
    out = []
    for k in sorted(set(shipped) | set(now)):
        if shipped.get(k) != now.get(k):
            a, b = shipped.get(k), now.get(k)
            short = lambda v: (v[:12] + "…") if isinstance(v, str) and len(v) > 16 else v  # noqa: E731
            out.append(f"{k} (shipped {short(a)}, now {short(b)})")
    return ", ".join(out)


# ------------------------------------------------------------------------------ sources and keys

def _applies(config, manifest: dict[str, Any], name: str) -> bool:
    """Whether entry ``name`` was made for this workspace's parts (the config fields that
    choose them are the manifest's); whether it is still right is :func:`install`'s check."""
    made_for = manifest.get("workspace")
    if config is None or not isinstance(made_for, dict):
        return False
    now = config.to_dict()
    return all(now.get(f) == made_for.get(f) for part in USES[name] for f in PART_FIELDS[part])


def vocabulary_source(world, seed: int) -> dict[str, Any]:
    from .assets import DEFAULT_PROBE_N, DEFAULT_VOCAB_N

    return {"world": world.hash, "seed": int(seed), "n": DEFAULT_VOCAB_N,
            "probe_n": DEFAULT_PROBE_N, "generator": GENERATOR_VERSION,
            "code": code_version("vocabulary")}


def _weights_sha256(path) -> Optional[str]:
    from ..cache import file_digest

    return file_digest(path) if isinstance(path, str) and Path(path).is_file() else None


def entry_source(falcon, name: str) -> dict[str, Any]:
    """What entry ``name`` of ``falcon``'s workspace comes from (see the module docstring)."""
    cfg = falcon.config
    src: dict[str, Any] = {"code": code_version(name)}
    if "backbone" in USES[name]:
        src["backbone_sha256"] = _weights_sha256(getattr(falcon.backbone, "weights", None))
    if "probe" in USES[name]:
        src["probe"] = falcon.probe.fingerprint
        if cfg is not None and cfg.probe == "demo":
            src.update(world=load_world(cfg.world).hash, probe_n=int(cfg.probe_size),
                       probe_seed=int(cfg.seed), generator=GENERATOR_VERSION)
    if "clip" in USES[name]:
        src["clip_sha256"] = _weights_sha256(getattr(falcon.clip, "pretrained", None))
    if "vocabulary" in USES[name]:
        src["vocabulary"] = falcon.vocabulary.fingerprint
    if name in ("concept_table", "document_frequency", FAILURES):
        src["concepts"] = falcon.extractor.fingerprint
    if name == FAILURES:
        src["settings"] = falcon.settings.to_dict()
        src["k"] = FAILURE_K
    return src


def entry_key(falcon, name: str) -> str:
    """The disk-cache key the pipeline uses for entry ``name`` of ``falcon``'s workspace."""
    from .. import cache_keys
    from ..data.vocabulary import DF_SAMPLE, _df_rows

    if name == "representations":
        return falcon.store.representations_key()
    if name == "text_embeddings":
        return cache_keys.text_embeddings(falcon.clip.fingerprint, falcon.vocabulary.fingerprint,
                                          int(falcon.clip.embed_dim))
    if name == "concept_table":
        return cache_keys.concept_table(falcon.vocabulary.fingerprint,
                                        falcon.extractor.fingerprint)
    if name == "document_frequency":
        sample = DF_SAMPLE if _df_rows(len(falcon.vocabulary), DF_SAMPLE) is not None else 0
        return cache_keys.document_frequency(falcon.vocabulary.fingerprint,
                                             falcon.extractor.fingerprint, sample)
    if name == "view_embeddings":
        return cache_keys.view_embeddings(falcon.probe.fingerprint, falcon.backbone.fingerprint,
                                          falcon.clip.fingerprint)
    raise KeyError(name)


# ------------------------------------------------------------------------------ using them

def install(falcon, directory: Path | str | None = None,
            progress: Optional[Callable[[int, int, str], None]] = None,
            force: bool = False) -> dict[str, str]:
    """Copy the shipped entries made for ``falcon``'s workspace into its cache (those the cache
    lacks) when their key, source and bytes match what this checkout computes. Returns
    ``{entry: what happened}``: ``installed``, ``in the cache`` or ``ignored: why`` (also logged
    as a warning); entries made for another workspace are left out. Never raises for a shipped
    file: at worst the pipeline computes the result itself. ``force``: even with
    ``FALCON_PREFILL=off``."""
    out: dict[str, str] = {}
    if not (force or enabled()):
        return out
    directory = Path(directory or PREFILL_DIR)
    manifest = read_manifest(directory)
    if manifest is None:
        if directory != PREFILL_DIR or _applies(getattr(falcon, "config", None),
                                                {"workspace": _DEMO_FIELDS()}, "representations"):
            log.warning("No shipped demo results in %s: they are computed on first use "
                        "(`python -m falcon_core.demo prefill` makes them).", directory)
        return out
    config = getattr(falcon, "config", None)
    names = [n for n in list(CACHE_ENTRIES) + [FAILURES] if n in manifest.get("entries", {})
             and _applies(config, manifest, n)]
    for i, name in enumerate(names):
        namespace, suffix = CACHE_ENTRIES.get(name, ("explanations", ".json"))
        try:
            if name == FAILURES:
                out[name] = _install_explanations(falcon, directory, manifest["entries"][name])
                continue
            key = entry_key(falcon, name)
            path = falcon.cache.path(namespace, key, suffix)
            if path.is_file():
                out[name] = "in the cache"
                continue
            rec = manifest["entries"][name]
            src = entry_source(falcon, name)
            if rec.get("source") != src:
                raise ValueError("it was made from other inputs: "
                                 + _diff(rec.get("source") or {}, src))
            if rec.get("key") != key:
                raise ValueError("its cache key is not the one this checkout computes")
            data = _read_entry(directory, rec)
            from ..cache_format import atomic_write

            atomic_write(path, lambda f, d=data: f.write(d))
            out[name] = "installed"
        except Exception as e:  # noqa: BLE001 - a shipped file must never break opening
            out[name] = f"ignored: {e}"
            log.warning("Shipped demo result %r ignored (%s); it is computed instead. "
                        "`python -m falcon_core.demo prefill` makes it again.", name, e)
        finally:
            if progress is not None:
                progress(i + 1, len(names), "shipped demo results")
    return out


def _cams_key(falcon, feature: int, explanation: dict[str, Any]) -> str:
    """The cache key of the GradCAM maps of ``feature``'s highly activating images (what the
    pages draw over them), from the images an explanation records."""
    from .. import cache_keys

    return cache_keys.cams(falcon.backbone.fingerprint, falcon.probe.fingerprint, [int(feature)],
                           [int(r["index"]) for r in explanation["high"]])


def _cached_json(data: bytes) -> Any:
    """The JSON value of a cache file's bytes (checked against its own checksum trailer)."""
    import io

    import xxhash

    from ..cache_format import CacheCheckError, read_trailer

    n, digest = read_trailer(io.BytesIO(data), len(data))
    if xxhash.xxh3_128_digest(data[:n]) != digest:
        raise CacheCheckError("checksum mismatch")
    return json.loads(data[:n].decode("utf-8"))


def _install_explanations(falcon, directory: Path, rec: dict[str, Any]) -> str:
    """The shipped explanations (:data:`FAILURES`) and their images' GradCAM maps into the cache,
    each under the key this checkout computes (ValueError when a source, a key or the bytes
    differ: nothing is written then)."""
    import base64

    src = entry_source(falcon, FAILURES)
    if rec.get("source") != src:
        raise ValueError("it was made from other inputs: " + _diff(rec.get("source") or {}, src))
    bundle = json.loads(_read_entry(directory, rec).decode("utf-8"))
    exps, cams = bundle["explanations"], bundle["cams"]
    keys = {int(f): falcon.explanation_key(int(f), falcon.settings) for f in bundle["features"]}
    if sorted(keys.values()) != sorted(exps):
        raise ValueError("its cache keys are not the ones this checkout computes")
    from ..cache_format import atomic_write

    exps = {key: base64.b64decode(text) for key, text in exps.items()}
    writes = [(("explanations", key, ".json"), exps[key]) for key in keys.values()]
    for f, key in keys.items():
        cams_key = _cams_key(falcon, f, _cached_json(exps[key]))
        if cams_key not in cams:
            raise ValueError(f"it has no GradCAM maps of feature {f}'s images under the key this "
                             "checkout computes")
        writes.append((("cams", cams_key, ".npy"), base64.b64decode(cams[cams_key])))
    written = 0
    for (namespace, key, suffix), data in writes:
        path = falcon.cache.path(namespace, key, suffix)
        if not path.is_file():
            atomic_write(path, lambda f, d=data: f.write(d))
            written += 1
    return "installed" if written else "in the cache"


def failure_explanations(falcon) -> tuple[int, list[int]]:
    """Explain what the Failures page shows first (its first misclassified probe image,
    :data:`FAILURE_K` features per side, the workspace's settings) the way the page does;
    returns (the image, its features)."""
    fails = falcon.failures()
    if not fails:
        return -1, []
    index = int(fails[0]["index"])
    fx = falcon.explain_failure(index, k=FAILURE_K, settings=falcon.settings)
    feats = []
    for it in list(fx.toward_predicted) + list(fx.toward_true):
        if it.get("explanation") is not None and int(it["feature"]) not in feats:
            feats.append(int(it["feature"]))
    return index, feats


def _explanations_bundle(falcon) -> bytes:
    """The explanations the Failures page shows first and the GradCAM maps it draws over their
    images (the cache's files, as the pipeline wrote them)."""
    import base64

    index, feats = failure_explanations(falcon)
    if not feats:
        raise FalconError("the Failures page would show no explanation (no misclassified probe "
                          "image, or none of its features explained with these settings)")
    exps, cams = {}, {}
    for f in feats:
        key = falcon.explanation_key(f, falcon.settings)
        data = falcon.cache.path("explanations", key, ".json").read_bytes()
        exps[key] = base64.b64encode(data).decode("ascii")
        falcon.cams(f, falcon.settings)  # read (or computed) as the pages do
        cams_key = _cams_key(falcon, f, _cached_json(data))
        path = falcon.cache.path("cams", cams_key, ".npy")
        if not path.is_file():
            raise RuntimeError(f"feature {f}: the GradCAM maps the pages read are not filed under "
                               "the key of the explanation's images")
        cams[cams_key] = base64.b64encode(path.read_bytes()).decode("ascii")
    return json.dumps({"image": index, "k": FAILURE_K, "features": feats, "explanations": exps,
                       "cams": cams}, sort_keys=True).encode("utf-8")


def _DEMO_FIELDS() -> dict[str, Any]:
    from ..workspace import WorkspaceConfig

    return WorkspaceConfig.demo().to_dict()


def shipped_captions(world, seed: int, directory: Path | str | None = None,
                     force: bool = False) -> Optional[list[str]]:
    """The demo vocabulary's captions from ``assets/prefill/`` when they were made from this
    world, seed, generator and code (else None; logged when they were made for this world and
    seed but by other code)."""
    if not (force or enabled()):
        return None
    directory = Path(directory or PREFILL_DIR)
    rec = ((read_manifest(directory) or {}).get("entries") or {}).get("vocabulary")
    if not isinstance(rec, dict) or not isinstance(rec.get("source"), dict):
        return None
    made = rec["source"]
    if made.get("world") != world.hash or made.get("seed") != int(seed):
        return None  # made for another world or seed
    try:
        src = vocabulary_source(world, seed)
        if made != src:
            raise ValueError(f"it was made from other inputs: {_diff(made, src)}")
        text = _read_entry(directory, rec).decode("utf-8")
    except Exception as e:  # noqa: BLE001 - never break opening: generate instead
        log.warning("Shipped demo vocabulary ignored (%s); it is generated instead.", e)
        return None
    return [line for line in text.split("\n") if line]


# ------------------------------------------------------------------------------ making them

def compute(falcon, name: str) -> None:
    """Compute entry ``name`` the way the pipeline does (it lands in ``falcon``'s cache)."""
    if name == "representations":
        falcon.representations()
    elif name == "text_embeddings":
        falcon.text_embeddings()
    elif name == "concept_table":
        falcon.concept_table()
    elif name == "document_frequency":
        falcon.document_frequencies()
    elif name == "view_embeddings":
        falcon.view_embeddings()
    else:
        raise KeyError(name)


def produce(out: Path | str | None = None, progress=None, config=None,
            say: Callable[[str], None] = print, settings=None) -> dict[str, Any]:
    """Compute every shipped result of ``config`` (the default demo world) in a fresh cache
    (nothing shipped is reused) and write them with their manifest into ``out``
    (``assets/prefill/``). ``settings``: the workspace's (default: the config's defaults, what
    the app starts with); the shipped explanations are made with them."""
    from ..pipeline import Falcon
    from ..workspace import WorkspaceConfig

    config = config or WorkspaceConfig.demo()
    out = Path(out or PREFILL_DIR)
    tmp = Path(tempfile.mkdtemp(prefix="falcon-prefill-"))
    saved = {k: os.environ.get(k) for k in ("FALCON_CACHE", "FALCON_PREFILL")}
    os.environ["FALCON_CACHE"] = str(tmp)  # the demo probe set and vocabulary are made there too
    os.environ["FALCON_PREFILL"] = "off"
    entries: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    try:
        t0 = time.perf_counter()
        falcon = Falcon.from_config(config, settings=settings, cache_dir=str(tmp),
                                    progress=progress)
        if config.vocabulary == "demo":
            from .assets import vocabulary_captions

            world = load_world(config.world)
            files["vocabulary"] = ("\n".join(vocabulary_captions(world, seed=0)) + "\n").encode()
            entries["vocabulary"] = {"source": vocabulary_source(world, 0)}
        for name, (namespace, suffix) in CACHE_ENTRIES.items():
            t = time.perf_counter()
            compute(falcon, name)
            key = entry_key(falcon, name)
            path = falcon.cache.path(namespace, key, suffix)
            if not path.is_file():
                raise RuntimeError(f"{name}: the pipeline did not write {path} (the key "
                                   "computed here is not the one it uses)")
            files[name] = path.read_bytes()
            entries[name] = {"namespace": namespace, "key": key,
                             "source": entry_source(falcon, name)}
            say(f"{name}: {len(files[name]) / 1e6:.2f} MB, {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        try:
            files[FAILURES] = _explanations_bundle(falcon)
        except FalconError as e:  # e.g. a backbone without a linear classifier head
            say(f"{FAILURES}: none ({e.message})")
        else:
            entries[FAILURES] = {"namespace": "explanations",
                                 "source": entry_source(falcon, FAILURES)}
            say(f"{FAILURES}: {len(files[FAILURES]) / 1e6:.2f} MB, "
                f"{time.perf_counter() - t:.1f} s")
        total = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        suffix = ".json" if name == FAILURES else CACHE_ENTRIES.get(name, ("", ".txt"))[1]
        fname = f"{name}{suffix}.gz"
        blob = gzip.compress(data, compresslevel=9, mtime=0)
        (out / fname).write_bytes(blob)
        entries[name].update(file=fname, sha256=_sha256(data), bytes=len(data),
                             stored_bytes=len(blob))
    for old in out.glob("*.gz"):
        if old.name not in {e["file"] for e in entries.values()}:
            old.unlink()
    manifest = {"format": FORMAT, "about": "Shipped results of the default demo world; see "
                "falcon_core/demo/prefill.py. Remake: python -m falcon_core.demo prefill",
                "workspace": config.to_dict(), "compute_seconds": round(total, 1),
                "entries": entries}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def check(directory: Path | str | None = None) -> dict[str, str]:
    """What a demo workspace opened now would do with each shipped entry (in a throw-away
    cache, so nothing is copied anywhere that lasts)."""
    from ..pipeline import Falcon
    from ..workspace import WorkspaceConfig

    tmp = tempfile.mkdtemp(prefix="falcon-prefill-check-")
    saved = os.environ.get("FALCON_PREFILL")
    try:
        os.environ["FALCON_PREFILL"] = "off"  # opening must not install: install() below does
        falcon = Falcon.from_config(WorkspaceConfig.demo(), cache_dir=tmp)
        got = {"vocabulary": "usable" if shipped_captions(load_world(None), 0, directory,
                                                          force=True) is not None
               else "ignored (see the log)"}
        for name, what in install(falcon, directory, force=True).items():
            got[name] = "usable" if what == "installed" else what
        return got
    finally:
        if saved is None:
            os.environ.pop("FALCON_PREFILL", None)
        else:
            os.environ["FALCON_PREFILL"] = saved
        shutil.rmtree(tmp, ignore_errors=True)
