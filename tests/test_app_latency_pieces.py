"""Issue 9, the app feels instant: what each click used to recompute is gone, with the same
results (the figures themselves come from ``python -m benchmarks.app_latency``, not from tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def test_cam_overlay_is_grad_cams_to_the_pixel():
    """ui/images draws the CAM without importing pytorch-grad-cam (seconds of imports): the same
    pixels as its show_cam_on_image."""
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from ui import images

    rng = np.random.default_rng(0)
    for size, alpha in ((64, 0.45), (37, 0.2), (100, 0.9)):
        img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        cam = rng.random((16, 16)).astype(np.float32)
        got = np.asarray(images.overlay(img, cam, alpha))
        rgb = np.asarray(img, dtype=np.float32) / 255.0
        want = show_cam_on_image(rgb, images._resize_cam(cam, img.size), use_rgb=True,
                                 image_weight=1.0 - alpha)
        assert got.shape == want.shape and np.array_equal(got, want)


def test_opening_a_workspace_reports_progress(tmp_path):
    from falcon_core.pipeline import Falcon
    from makers import make_tiny_world, tiny_config

    seen = []
    world = make_tiny_world(tmp_path / "w")
    Falcon.from_config(tiny_config(world), cache_dir=str(tmp_path / "c"),
                       progress=lambda d, t, s: seen.append((d, t, s)))
    opening = [(d, t) for d, t, s in seen if s == "opening the workspace"]
    assert opening == [(i, 4) for i in range(5)]


@pytest.fixture(scope="module")
def demo():
    from falcon_core import Falcon, WorkspaceConfig

    falcon = Falcon.from_config(WorkspaceConfig.demo())  # FALCON_CACHE: tests/conftest.py
    return falcon


def test_a_failure_shares_the_work_of_its_features_with_the_same_results(demo, tmp_path):
    """explain_failure does the GradCAM and CLIP work of all its features at once
    (Catalogue.prefill) before explaining each: the explanations are those of one explain()
    per feature, made without it (to the tolerance of the precompute's test)."""
    from falcon_core import Falcon, WorkspaceConfig

    index = int(demo.failures()[0]["index"])
    calls = []
    real = demo.catalogue.prefill

    def spy(features, settings=None):
        calls.append(list(features))
        return real(features, settings)

    demo.failure_analyser.prefill = spy
    try:
        fx = demo.explain_failure(index, k=2)
    finally:
        demo.failure_analyser.prefill = real
    expected = sorted({it["feature"] for it in fx.toward_predicted + fx.toward_true})
    assert len(calls) == 1 and sorted(set(calls[0])) == expected

    alone = Falcon.from_config(WorkspaceConfig.demo(), cache_dir=str(tmp_path / "alone"))
    alone.failure_analyser.prefill = None
    for it in fx.toward_predicted + fx.toward_true:  # as precompute == explain (issue 9):
        a, b = it["explanation"], alone.explain(it["feature"])  # CLIP batches differ in last bits
        for kind in ("words", "phrases", "spurious_words", "spurious_phrases"):
            assert [c.text for c in getattr(a, kind)] == [c.text for c in getattr(b, kind)]
            np.testing.assert_allclose([c.score for c in getattr(a, kind)],
                                       [c.score for c in getattr(b, kind)], atol=1e-4)
        assert [(r.index, r.box) for r in a.high] == [(r.index, r.box) for r in b.high]
        assert [r.index for r in a.low] == [r.index for r in b.low]
        assert [[m.index for m in r.captions] for r in a.high] == \
            [[m.index for m in r.captions] for r in b.high]
        assert abs(a.coherence - b.coherence) < 1e-4


def test_the_explorer_makes_no_download_file_until_it_is_clicked(demo, monkeypatch):
    """The PNG grids, the JSON and the CSV of the explorer's download buttons were made on every
    run of the page (half of a seen feature's time): now only when a button is clicked."""
    from streamlit.testing.v1 import AppTest

    from falcon_core.explanation import Explanation
    from ui import loaders

    stats = demo.feature_stats()
    feature = int(np.argmax(np.asarray(stats["n_high"])))
    demo.explain(feature)

    def boom(*a, **k):
        raise AssertionError("a download file was made during the page run")

    monkeypatch.setattr(loaders, "grid_png", boom)
    monkeypatch.setattr(Explanation, "to_json", boom)
    monkeypatch.setattr(Explanation, "to_csv", boom)
    at = AppTest.from_file(APP, default_timeout=900)
    at.query_params["feature"] = str(feature)
    at.run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not at.error, [e.value for e in at.error]
    assert any(s.value.startswith(f"Feature {feature}:") for s in at.subheader)
    labels = [b.label for b in at.get("download_button")]
    assert "Download these images (PNG)" in labels and "Download the explanation (JSON)" in labels
