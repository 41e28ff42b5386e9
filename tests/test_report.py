"""The HTML report: self-contained, every explained feature with its concepts and pictures,
the workspace, the groups and the failure summary (checked against the data, not the report
code). tests/test_browser.py opens one in Chromium."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pytest
from PIL import Image

from falcon_core.errors import FalconError
from falcon_core.report import ReportOptions, build_report, write_report


@pytest.fixture(scope="module")
def demo():
    """The demo world with three features explained (FALCON_CACHE: tests/conftest.py)."""
    from falcon_core import Falcon, WorkspaceConfig

    falcon = Falcon.from_config(WorkspaceConfig.demo())
    n_high = np.asarray(falcon.feature_stats()["n_high"])
    for f in [int(f) for f in np.argsort(-n_high, kind="stable")][:3]:
        falcon.explain(f)
    return falcon


@pytest.fixture(scope="module")
def report(demo):
    return build_report(demo, options=ReportOptions(explain_missing=False))


def test_nothing_in_the_file_reaches_outside_it(report):
    text = report.html
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; ' \
           "img-src data:; style-src 'unsafe-inline'\">" in text
    for outside in ("http:", "https:", "//cdn", "<script", "@import", "<link", "src=", "<img"):
        assert outside not in text, outside
    assert re.findall(r"url\(([^)]*)\)", text)
    assert all(u.startswith("data:image/jpeg;base64,") for u in re.findall(r"url\(([^)]*)\)", text))


def test_every_explained_feature_by_coherence_with_its_concepts(demo, report):
    done = demo.explained()
    assert report.features == len(done) >= 3
    order = [int(f) for f in re.findall(r'<section class="feature" id="f(\d+)">', report.html)]
    cohs = [done[f].coherence for f in order]
    assert sorted(order) == sorted(done) and cohs == sorted(cohs, reverse=True)
    for f, exp in done.items():
        card = report.html.split(f'id="f{f}">', 1)[1].split("</section>", 1)[0]
        for c in exp.words + exp.phrases + exp.spurious_words + exp.spurious_phrases:
            assert f'<td class="c">{html.escape(c.text)}</td>' in card, (f, c.text)
        assert f"coherence {exp.coherence:.3f}" in card
        # the top images (crop box drawn) and their crops: one of each per image
        n = min(6, len(exp.high))
        assert card.count('<i class="box') == n
        assert card.count("background-position:") == n


def test_each_picture_is_stored_once_and_is_a_real_image(demo, report):
    stored = re.findall(r"\.(p\d+)\{background-image:url\(data:image/jpeg;base64,([^)]*)\)\}",
                        report.html)
    assert len(stored) == report.pictures == len({name for name, _ in stored})
    for name, data in stored:
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        im.load()
        assert im.format == "JPEG" and max(im.size) <= 128
    used = set(re.findall(r'class="pic (p\d+)"', report.html))
    assert used == {name for name, _ in stored}
    # the demo's features share images: fewer pictures than places they are shown
    places = len(re.findall(r'class="pic p\d+"', report.html))
    assert report.pictures < places


def test_workspace_and_failure_summary(demo, report):
    text = report.html
    # the demo vocabulary has at least 24,000 distinct captions (the generator stops once it has them)
    n_captions = len(demo.vocabulary)
    assert 24000 <= n_captions < 24004
    for want in ("demo", "fc:input", "falcon-demo-clip", f"{n_captions} captions", "5000 (0 unreadable)",
                 "high_rule</th><td>topk  (authors: global)"):
        assert html.escape(want, quote=False) in text or want in text, want
    # accuracy by hand: the head over H against the probe's labels
    H, valid = demo.representations()
    head = demo.backbone.head
    logits = H @ head.weight.detach().numpy().T + head.bias.detach().numpy()
    labels = np.asarray(demo.probe.labels)
    right = (logits.argmax(axis=1) == labels)[valid]
    assert f"Accuracy {100 * right.mean():.1f} % on {int(valid.sum())} labelled probe images; " \
           f"{int((~right).sum())} misclassified." in text
    pairs = {}
    for t, p in zip(labels[valid][~right], logits.argmax(axis=1)[valid][~right]):
        pairs[(int(t), int(p))] = pairs.get((int(t), int(p)), 0) + 1
    (t, p), n = max(pairs.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
    names = demo.backbone.class_names
    assert f"true {names[t]} → predicted {names[p]}: {n} image(s)" in text
    assert '<section id="groups"><h2>Discovered groups' in text


def test_write_report_is_atomic_and_says_what_is_wrong(demo, tmp_path):
    with pytest.raises(FalconError, match="is a folder"):
        write_report(demo, tmp_path, options=ReportOptions(explain_missing=False))
    with pytest.raises(FalconError, match="does not exist"):
        write_report(demo, tmp_path / "no" / "r.html")
    out = tmp_path / "r.html"
    result = write_report(demo, out, options=ReportOptions(explain_missing=False, images=2))
    assert out.read_text(encoding="utf-8") == result.html
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_an_image_that_cannot_be_read_any_more_loses_nothing_else(demo, monkeypatch):
    """A probe image damaged after Stage 1 (the library raises BadImageError): a placeholder in
    its place, every other picture and concept still there; a bug is not hidden."""
    from falcon_core.errors import BadImageError

    done = demo.explained()
    f = next(iter(done))
    bad = done[f].high[0].index
    real_view = demo.view

    def view(i):
        if int(i) == bad:
            raise BadImageError(f"Cannot read image {i}: truncated")
        return real_view(i)

    monkeypatch.setattr(demo, "view", view)
    result = build_report(demo, options=ReportOptions(explain_missing=False))
    card = result.html.split(f'id="f{f}">', 1)[1].split("</section>", 1)[0]
    assert card.count('class="pic missing"') >= 2  # the image and its crop
    assert card.count("<figure>") >= 1 or len(done[f].high) == 1
    for c in done[f].words:
        assert html.escape(c.text) in card

    def broken(i):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(demo, "view", broken)
    with pytest.raises(ZeroDivisionError):
        build_report(demo, options=ReportOptions(explain_missing=False))
