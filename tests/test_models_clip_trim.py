"""Text embedded at its own length (issue 9): trimmed batches give open_clip's encode_text."""

import numpy as np
import pytest
import torch

from falcon_core.models.clip import (ClipSpec, create_clip, encode_text_trimmed,
                                     text_trim_support)

# lengths from 3 to ~60 tokens, in no order, so buckets and the scatter back both matter
CAPTIONS = [
    "a dog",
    "A large cobalt chequered triangle next to a violet stripy triangle on a meadow",
    "sky",
    "a red car parked in front of an old brick house on a rainy afternoon in the city centre, "
    "with people walking by under umbrellas and a bus in the distance",
    "two cats",
    "A little disk with dots next to a star decorated with spots on a field",
    "a photo of a mountain lake at sunrise",
    "stock photo",
]


def _lengths_seen(clip):
    seen = []
    h = clip.model.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(args[0].shape[1]), with_kwargs=True)
    return seen, h


def _check_same_as_encode_text(clip, captions, context):
    assert clip.text_trim, clip.text_trim_note
    seen, h = _lengths_seen(clip)
    try:
        trimmed = clip.encode_texts(captions, batch_size=3)
    finally:
        h.remove()
    full = clip.encode_texts(captions, batch_size=3, trim=False)
    cos = (trimmed * full).sum(axis=1)
    assert cos.min() >= 0.99999, cos
    # the rows are in the order given: each matches its own caption, not a neighbour
    assert (np.argmax(trimmed @ full.T, axis=1) == np.arange(len(captions))).all()
    # and the transformer really ran on shorter sequences, shortest batch first
    assert max(seen) < context and min(seen) < max(seen) and seen == sorted(seen)
    tokens = clip.tokenizer(captions)
    assert max(seen) == int(tokens.argmax(-1).max()) + 1


@pytest.fixture(scope="module")
def demo_clip():
    return create_clip("demo")


def test_demo_clip_trimmed_equals_encode_text(demo_clip):
    from falcon_core.demo.integration import demo_vocabulary

    v = demo_vocabulary()
    caps = v.captions(range(0, 600, 7)) + ["sky", "a dog"]
    _check_same_as_encode_text(demo_clip, caps, demo_clip.model.context_length)


def test_random_vit_b32_trimmed_equals_encode_text():
    clip = create_clip(ClipSpec("ViT-B-32", pretrained=None))
    _check_same_as_encode_text(clip, CAPTIONS, 77)


def test_encode_text_trimmed_on_one_batch(demo_clip):
    tokens = demo_clip.tokenizer(CAPTIONS[:3])
    with torch.no_grad():
        a = encode_text_trimmed(demo_clip.model, tokens)
        b = demo_clip.model.encode_text(tokens)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_towers_that_cannot_be_trimmed_fall_back_and_say_why(demo_clip):
    import copy

    caps = CAPTIONS[:4]
    full = demo_clip.encode_texts(caps, trim=False)

    bidirectional = copy.deepcopy(demo_clip)
    bidirectional.model.attn_mask = torch.zeros_like(demo_clip.model.attn_mask)
    ok, why = text_trim_support(bidirectional.model)
    assert not ok and "not the causal mask" in why
    with torch.no_grad():  # encode_text_trimmed falls back to encode_text itself
        tokens = demo_clip.tokenizer(caps)
        torch.testing.assert_close(encode_text_trimmed(bidirectional.model, tokens),
                                   bidirectional.model.encode_text(tokens))

    last = copy.deepcopy(demo_clip)
    last.model.text_pool_type = "last"
    ok, why = text_trim_support(last.model)
    assert not ok and "'last'" in why

    no_mask = copy.deepcopy(demo_clip)
    no_mask.model.attn_mask = None
    assert not text_trim_support(no_mask.model)[0]
    assert text_trim_support(demo_clip.model)[0]
    np.testing.assert_allclose(demo_clip.encode_texts(caps), full, atol=1e-5)
