"""A short training run of the demo CLIP with one recipe, measured the way the build measures it.

    python -m benchmarks.clip_recipe --steps 400 --recipe current|confusion [--threads 1] [--json out.json]

Trains on the build's CLIP scenes (seed 0 streams, the first ``--scenes`` of them) with the
build's settings (``FULL``) but ``--steps`` steps, rounds the weights through float16 as the
checkpoint does, and runs :func:`falcon_core.demo.clip_model.evaluate_clip` on ``--eval``
held-out scenes against the demo vocabulary. Recipes:

- ``current``: the build's recipe (hard negatives change a value drawn uniformly);
- ``confusion``: the same, but every ``--every`` steps the model's confusions are measured
  (:func:`~falcon_core.demo.clip_model.confusion_weights`) and half of each hard negative's
  replacement value follows them (hexagon's negatives say "circle" more often while the model
  confuses the two).

Run two recipes with the same arguments to compare them (same seed, same data, same steps).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--recipe", choices=("current", "confusion"), default="current")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--scenes", type=int, default=8000)
    ap.add_argument("--eval", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)

    from falcon_core.demo import clip_model as CM
    from falcon_core.demo.build import FULL, demo_vocabulary, render_many, stream_seed
    from falcon_core.demo.world import load_world

    world = load_world(None)
    unc = world.uncorrelated()
    scenes = unc.sample_scenes(FULL["clip_scenes"], stream_seed(a.seed, "train-uncorrelated"))[:a.scenes]
    images = render_many(world, scenes)
    ev_scenes = unc.sample_scenes(FULL["clip_eval_scenes"], stream_seed(a.seed, "heldout-uncorrelated"))[:a.eval]
    ev_images = render_many(world, ev_scenes)
    vocabulary = demo_vocabulary(world)
    t0, c0 = time.time(), time.process_time()
    model, stats = CM.train_clip(unc, scenes, images, a.steps, FULL["clip_batch"], FULL["clip_lr"],
                                 stream_seed(a.seed, "clip"), lambda s: print(s, flush=True),
                                 hard_negative=FULL["clip_hard_negatives"], visual_lr=FULL["clip_visual_lr"],
                                 confusion_every=a.every if a.recipe == "confusion" else 0)
    wall, cpu = time.time() - t0, time.process_time() - c0
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in CM.half_state_dict(model).items()})
    model.eval()
    ev = CM.evaluate_clip(model, world, ev_scenes, ev_images, vocabulary, stream_seed(a.seed, "clip-eval"))
    summary = CM.summary(ev)
    print(f"recipe {a.recipe}, {a.steps} steps, batch {FULL['clip_batch']}: {wall:.0f} s wall, {cpu:.0f} CPU s "
          f"({cpu / a.steps:.2f} CPU s per step), final loss {stats['final_loss']}")
    for k, v in summary.items():
        print(f"    {k:20s} {v:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"recipe": a.recipe, "steps": a.steps, "wall_s": wall, "cpu_s": cpu, "summary": summary,
                       "stats": {k: v for k, v in stats.items() if k != "last_confusion"},
                       "last_confusion": stats.get("last_confusion"), "eval": ev}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
