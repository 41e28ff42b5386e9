"""Where the heavy work runs: in this process (``local``, the default) or on Ray (``ray``).

Three kinds of work can leave the process, each the same code whichever engine runs it:

* Stage 1, the representations ``H``: the probe set in chunks of rows
  (:data:`falcon_core.representation_store.CHUNK_ROWS`), one task a chunk;
* the text embeddings of a caption vocabulary: chunks of captions, one task a chunk;
* the whole-layer precompute: the features split into one part per worker, each part a task
  that runs :meth:`falcon_core.catalogue.Catalogue.precompute` on its features (whatever the
  catalogue's precompute does, batched or not: the engine only partitions it);
* and the parts of an IVF-PQ caption index (:func:`falcon_core.caption_index.build_ivfpq`).

Results come back to this process and are merged into the same content-keyed cache as an
in-process run: a chunk's rows are written where :meth:`DiskCache.compute_chunked` would have
written them (so an interrupted run resumes, whichever engine ran it), and an explanation under
its usual key. The in-process engine simply calls the function.

Why Ray tasks rather than Ray Data ``map_batches``: the units here are ranges of rows whose
results must land, in order, in resumable cache chunks, and partitions of features whose work is
the catalogue's own function; tasks map onto both directly (ordered results with a bounded number
in flight, a GPU per task where the cluster has GPUs), without expressing the probe set as a Ray
Dataset or paying the streaming executor's start-up. Ray Data would pay off for reading raw image
files from object storage, which FALCON's probe sets do not need.

A cluster: ``ray.init(address=...)`` happens here with ``address`` (``--ray-address``) or
``$RAY_ADDRESS``; without either, a local Ray is started. The precompute's workers read ``H`` and
the text embeddings from the cache folder, which must then be on a file system every node sees
(the same path); Stage 1 and the text embeddings need no shared folder (their rows travel back).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from .errors import FalconError

ENGINES = ("local", "ray")


class LocalEngine:
    """Everything in this process (the default)."""

    name = "local"

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        for item in items:
            yield fn(item)

    map_parts = map

    def chunk_fn(self, job: Callable[[int, int], Any], bounds: Sequence[tuple[int, int]]
                 ) -> Callable[[int, int], Any]:
        return job

    def precompute(self, falcon, features=None, settings=None, on_feature=None):
        return falcon.catalogue.precompute(features, settings, on_feature)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name}


def _device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover
        return "cpu"


def to_worker_device(*models) -> None:
    """Move models to this worker's GPU when it has one (Ray gives a task its GPU)."""
    dev = _device()
    if dev == "cpu":
        return
    for m in models:
        if m is None:
            continue
        if hasattr(m, "to"):
            m.to(dev)
        if hasattr(m, "model") and hasattr(m, "device"):  # ClipModel: its model and inputs
            m.model.to(dev)
            import torch

            m.device = torch.device(dev)


_WORKER_PARTS: dict[str, dict[str, Any]] = {}


def worker_part(config, name: str):
    """``backbone``, ``probe``, ``clip`` or ``vocabulary`` of a workspace config, built once per
    worker process (a job travels as its config, not as models: models are not picklable, and
    every node loads them from the registry or the same paths)."""
    from .cache import hash_json

    parts = _WORKER_PARTS.setdefault(hash_json(config.to_dict()), {})
    if name not in parts:
        if name == "backbone":
            parts[name] = config.build_backbone()
            to_worker_device(parts[name])
        elif name == "probe":
            parts[name] = config.build_probe(worker_part(config, "backbone"))
        elif name == "clip":
            parts[name] = config.build_clip()
            to_worker_device(parts[name])
        elif name == "vocabulary":
            parts[name] = config.build_vocabulary()
        else:  # pragma: no cover
            raise KeyError(name)
    return parts[name]


class ConfigParts:
    """Mixin for jobs: attributes named in ``PARTS`` travel as the workspace config (when there
    is one) and are rebuilt on the worker by :func:`worker_part`."""

    PARTS: tuple[str, ...] = ()
    config = None

    def __getstate__(self):
        d = {**self.__dict__, "progress": None}
        if d.get("config") is not None:
            for name in self.PARTS:
                d.pop(name, None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)

    def __getattr__(self, name):  # a part dropped for the trip: rebuild it here
        if name in type(self).PARTS and self.__dict__.get("config") is not None:
            value = worker_part(self.__dict__["config"], name)
            self.__dict__[name] = value
            return value
        raise AttributeError(name)


def _run(fn, item):
    return fn(item)


def _run_chunk(job, start, stop):
    return job(start, stop)


def _precompute_part(spec: dict, features: list[int]) -> dict:
    """A worker's part of the precompute: the catalogue's precompute on ``features``, in a
    Falcon built here (from the workspace config, or the pickled parts) on the same cache."""
    from .cache import DiskCache
    from .pipeline import Falcon

    if spec.get("config") is not None:
        falcon = Falcon.from_config(spec["config"], settings=spec["settings"],
                                    cache_dir=spec["cache_root"])
    else:
        parts = spec["parts"]
        falcon = Falcon(parts["backbone"], parts["clip"], parts["probe"], parts["vocabulary"],
                        settings=spec["settings"], cache=DiskCache(spec["cache_root"]))
    if not falcon.store.is_computed():
        raise FalconError(
            "A Ray worker does not see the representations in the cache folder "
            f"{spec['cache_root']}.",
            "Put the cache folder on a file system every node mounts at the same path "
            "(--cache-dir / FALCON_CACHE), or run the precompute with --engine local.")
    to_worker_device(falcon.backbone, falcon.clip)
    errors = falcon.catalogue.precompute(features, spec["settings"])
    out = {}
    for f, err in errors.items():
        exp = falcon.cached_explanation(f, spec["settings"]) if err is None else None
        out[int(f)] = (err, falcon.explanation_key(f, spec["settings"]),
                       exp.to_dict() if exp is not None else None)
    return out


class RayEngine:
    """Tasks on a Ray cluster (or a local Ray): see the module docstring."""

    name = "ray"

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None,
                 gpus_per_task: Optional[float] = None, window: Optional[int] = None,
                 **init_kwargs: Any):
        try:
            import ray
        except ImportError as e:
            raise FalconError("--engine ray needs Ray.",
                              "pip install ray (see requirements.txt), or use --engine local.") from e
        self.ray = ray
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            kw = dict(include_dashboard=False, log_to_driver=False,
                      ignore_reinit_error=True, configure_logging=False)
            if address is None:  # a local Ray: this machine's cores (or num_cpus)
                kw["num_cpus"] = num_cpus
            # the workers import this package as it is here (Ray ships it to every node)
            kw["runtime_env"] = {"py_modules": [os.path.dirname(os.path.abspath(__file__))]}
            kw.update(init_kwargs)
            try:
                ray.init(address=address, **kw)
            except Exception as e:
                raise FalconError(f"Cannot start or reach Ray ({address or 'local'}): {e}",
                                  "Check --ray-address / RAY_ADDRESS (ray://host:10001 or "
                                  "host:6379), or use --engine local.") from e
        res = ray.cluster_resources()
        self.cpus = max(1, int(res.get("CPU", 1)))
        self.gpus = int(res.get("GPU", 0))
        self.gpus_per_task = (1 if self.gpus else 0) if gpus_per_task is None else gpus_per_task
        self.window = int(window or 2 * max(self.cpus, self.gpus or 0))
        opts = {"num_cpus": 1, "num_gpus": self.gpus_per_task, "max_retries": 2}
        self._run = ray.remote(**opts)(_run)
        self._run_chunk = ray.remote(**opts)(_run_chunk)
        self._precompute = ray.remote(**opts)(_precompute_part)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "cpus": self.cpus, "gpus": self.gpus,
                "gpus_per_task": self.gpus_per_task}

    def _ordered(self, submit: Callable[[Any], Any], items: Iterable) -> Iterator:
        """Submit ``items`` with at most ``window`` in flight; yield results in order."""
        ray = self.ray
        pending: deque = deque()
        it = iter(items)
        for item in it:
            pending.append(submit(item))
            if len(pending) >= self.window:
                break
        while pending:
            ref = pending.popleft()
            yield ray.get(ref)
            for item in it:
                pending.append(submit(item))
                break

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        fn_ref = self.ray.put(fn)
        return self._ordered(lambda item: self._run.remote(fn_ref, item), items)

    map_parts = map

    def chunk_fn(self, job: Callable[[int, int], Any], bounds: Sequence[tuple[int, int]]
                 ) -> Callable[[int, int], Any]:
        """A ``fn(start, stop)`` for :meth:`DiskCache.compute_chunked` that runs ``job`` on Ray.

        compute_chunked asks for the chunks it lacks, in order; the first request submits it and
        the next ``window - 1`` chunks of ``bounds`` after it (a chunk already on disk is never
        asked for, and one submitted ahead that is not asked for is dropped), so the cluster
        works ahead while this process stores each chunk as it comes."""
        ray = self.ray
        job_ref = ray.put(job)
        order = list(bounds)
        pos = {b: i for i, b in enumerate(order)}
        futures: dict[tuple[int, int], Any] = {}
        state = {"next": 0}

        def fn(start: int, stop: int):
            b = (int(start), int(stop))
            i = pos.get(b)
            if i is None:  # not a planned chunk: run it alone
                return ray.get(self._run_chunk.remote(job_ref, *b))
            for old in [k for k in futures if pos[k] < i]:  # skipped: on disk already
                ray.cancel(futures.pop(old))
            state["next"] = max(state["next"], i)
            while state["next"] < len(order) and len(futures) < self.window:
                nb = order[state["next"]]
                if nb not in futures:
                    futures[nb] = self._run_chunk.remote(job_ref, *nb)
                state["next"] += 1
            ref = futures.pop(b, None) or self._run_chunk.remote(job_ref, *b)
            return ray.get(ref)

        return fn

    def precompute(self, falcon, features=None, settings=None, on_feature=None):
        """The catalogue's precompute, its features split into one part per worker; the
        explanations come back and are stored in this process's cache under their keys."""
        settings = settings or falcon.settings
        falcon.representations()  # Stage 1, the text embeddings and the concept table first
        falcon.text_embeddings()
        falcon.concept_table()
        feats = list(range(falcon.num_features)) if features is None else [int(f) for f in features]
        feats = [int(f) for f in falcon.store.features(feats)] if feats else []
        todo = [f for f in feats if falcon.cached_explanation(f, settings) is None]
        result: dict[int, Optional[str]] = {f: None for f in feats if f not in todo}
        n_parts = max(1, min(len(todo), self.gpus if self.gpus_per_task else self.cpus))
        parts = [todo[i::n_parts] for i in range(n_parts)] if todo else []
        spec = {"settings": settings, "cache_root": str(falcon.cache.root),
                "config": getattr(falcon, "config", None)}
        if spec["config"] is None:
            spec["parts"] = {"backbone": falcon.backbone, "clip": falcon.clip,
                             "probe": falcon.probe, "vocabulary": falcon.vocabulary}
        spec_ref = self.ray.put(spec)
        refs = [self._precompute.remote(spec_ref, part) for part in parts]
        done = len(result)
        for ref in refs:
            for f, (err, key, data) in self.ray.get(ref).items():
                if data is not None and falcon.cache.read_json("explanations", key) is None:
                    falcon.cache.write_json("explanations", key, data)
                result[f] = err
                done += 1
                if on_feature:
                    exp = falcon.cached_explanation(f, settings) if err is None else None
                    on_feature(f, exp, err)
                falcon.progress(done, len(feats), "features")
        return {f: result[f] for f in feats}


def create_engine(name: str | None = None, address: Optional[str] = None, **kw: Any):
    """``local`` (default) or ``ray``."""
    name = (name or "local").lower()
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(address=address, **kw)
    raise FalconError(f"Unknown engine {name!r}.", f"Use one of {', '.join(ENGINES)}.")
