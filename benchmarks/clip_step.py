"""Where one training step of the demo CLIP goes, before and after issue 7's step changes.

    python -m benchmarks.clip_step [--steps 6] [--batch 256] [--threads 2]

Two models from the same seed are trained side by side, one step of each in turn (so both see the
same load): "before" computes the step as the build did until issue 7's rework (the batch made
image by image with ``pp``, ``encode_text`` on the whole 32-token context, AdamW's per-tensor
loop, the image tower in the default memory format, the caption-word lookup rehashing the world
config on every call); "after" is :func:`falcon_core.demo.clip_model.train_clip`'s step. Prints
CPU seconds per step for each part and the ratios (the process's CPU time, both threads, the
fastest step per part: on a shared machine wall time mostly measures the other jobs; torch's
threads wait passively, so spinning is not counted as work), then how far the two computations
differ on the same inputs (the batch tensor must be bit for bit the same; text embeddings differ
by float rounding only) and the text tower's forward + backward for 1, 2 and 4 length buckets.
The first step of each is a warm-up, not counted.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep: CPU time is work, not spinning

import numpy as np  # noqa: E402
import torch  # noqa: E402

PARTS = ("sample", "batch tensor", "tokenise", "image fwd", "text fwd", "loss+backward", "optimizer")


class _NoStore(dict):
    """An id cache that never keeps anything: the caption-word lookup as it was before."""

    def __setitem__(self, key, value):
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scenes", type=int, default=2000)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)

    from falcon_core.demo import clip_model as CM
    from falcon_core.demo.build import render_many
    from falcon_core.demo.world import load_world

    world = load_world(None).uncorrelated()
    scenes = world.sample_scenes(a.scenes, 1)
    images = render_many(world, scenes)
    tok = CM.tokenizer()

    def make(fused: bool):
        torch.manual_seed(0)
        model, _, pp = CM.create()
        model.train()
        if fused:  # "after": the image tower channels-last, as train_clip runs it
            model.visual.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(CM._param_groups(list(model.named_parameters()), 0.05), lr=1e-3,
                                betas=(0.9, 0.98), eps=1e-6, fused=fused)
        return model, pp, opt

    runs = {"before": make(False), "after": make(True)}
    rngs = {k: np.random.default_rng(0) for k in runs}
    times = {k: {p: [] for p in PARTS} for k in runs}
    owners = CM._OWNERS_BY_ID

    def step(kind: str, count: bool) -> None:
        model, pp, opt = runs[kind]
        t = {}
        c = time.process_time()
        CM._OWNERS_BY_ID = _NoStore() if kind == "before" else owners
        ims, texts, negs = CM.sample_pairs(world, scenes, images, a.batch, rngs[kind], CM.MIX, 64, 1.0)
        CM._OWNERS_BY_ID = owners
        negs = [n for n in negs if n is not None]
        t["sample"] = time.process_time() - c
        c = time.process_time()
        x = (torch.stack([pp(im) for im in ims]) if kind == "before"
             else CM.images_to_batch(ims, pp).contiguous(memory_format=torch.channels_last))
        t["batch tensor"] = time.process_time() - c
        c = time.process_time()
        tokens = tok(texts + negs)
        t["tokenise"] = time.process_time() - c
        c = time.process_time()
        img_f = model.encode_image(x, normalize=True)
        t["image fwd"] = time.process_time() - c
        c = time.process_time()
        if kind == "before":
            all_t = model.encode_text(tokens, normalize=True)
        else:
            all_t = torch.nn.functional.normalize(CM.encode_text_bucketed(model, tokens, 2), dim=-1)
        t["text fwd"] = time.process_time() - c
        c = time.process_time()
        loss = CM.contrastive_loss(img_f, all_t[:a.batch], all_t[a.batch:], model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t["loss+backward"] = time.process_time() - c
        c = time.process_time()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        t["optimizer"] = time.process_time() - c
        if count:
            for p in PARTS:
                times[kind][p].append(t[p])

    for i in range(a.steps + 1):
        for kind in runs:
            step(kind, count=i > 0)

    print(f"demo CLIP training step, batch {a.batch}, {a.threads} threads, {a.steps} steps each "
          f"(interleaved), CPU seconds per step (both threads; "
          f"fastest of the steps: the machine is shared, so CPU time, not wall time)")
    print(f"{'part':16s} {'before':>8s} {'after':>8s} {'ratio':>7s}")
    tot = {k: 0.0 for k in runs}
    for p in PARTS:
        b, f = (float(np.min(times[k][p])) for k in ("before", "after"))
        tot["before"] += b
        tot["after"] += f
        print(f"{p:16s} {b:8.3f} {f:8.3f} {b / max(f, 1e-9):6.2f}x")
    print(f"{'total':16s} {tot['before']:8.3f} {tot['after']:8.3f} {tot['before'] / tot['after']:6.2f}x")

    # the same inputs through both computations
    rng = np.random.default_rng(5)
    ims, texts, negs = CM.sample_pairs(world, scenes, images, a.batch, rng, CM.MIX, 64, 1.0)
    model, pp, _ = runs["before"]
    model.eval()
    same = torch.equal(torch.stack([pp(im) for im in ims]), CM.images_to_batch(ims, pp))
    tokens = tok(texts + [n for n in negs if n is not None])
    with torch.no_grad():
        full = model.encode_text(tokens)
        diffs = [float((CM.encode_text_bucketed(model, tokens, b) - full).abs().max()) for b in (1, 2, 4)]
    lengths = (tokens.argmax(-1) + 1).float()
    print(f"batch tensor bit for bit equal to pp's: {same}; text embedding max |diff| vs encode_text "
          f"(1/2/4 buckets): {', '.join(f'{d:.1e}' for d in diffs)}; caption length in tokens: mean "
          f"{lengths.mean():.1f}, max {int(lengths.max())} of {tokens.shape[1]}")
    seen = CM.sample_pairs(world, scenes, images, 10 * a.batch, np.random.default_rng(7), CM.MIX, 64, 1.0)
    caps = seen[1] + [n for n in seen[2] if n is not None]
    print(f"captions repeating within 10 batches: {1 - len(set(caps)) / len(caps):.1%} (a token cache would "
          f"save that share of tokenising)")

    model.train()
    ts = {b: [] for b in (0, 1, 2, 4)}
    for _ in range(a.steps):
        for b in ts:  # interleaved
            c = time.process_time()
            out = model.encode_text(tokens) if b == 0 else CM.encode_text_bucketed(model, tokens, b)
            out.square().sum().backward()
            ts[b].append(time.process_time() - c)
            model.zero_grad(set_to_none=True)
    for b, t in ts.items():
        label = "full context" if b == 0 else f"{b} bucket(s)"
        print(f"text tower fwd+bwd, {label:13s}: {min(t):.3f} CPU s (fastest of {len(t)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
