"""WorkspaceConfig builds every input through its kind's registry, the demo world included (no
special case), and registries pass each factory only the options it reads."""

from __future__ import annotations

import numpy as np
import pytest

from falcon_core.data import probes, vocabulary
from falcon_core.data.probes import ArrayProbe, create_probe
from falcon_core.data.vocabulary import ListVocabulary
from falcon_core.models import backbones, clip
from falcon_core.registry import Registry, accepted_options
from falcon_core.settings import FalconSettings
from falcon_core.workspace import WorkspaceConfig


def test_accepted_options_follow_the_signature():
    def probe_factory(world=None, n=10):
        return world, n

    assert accepted_options(probe_factory, {"world": "w", "n": 3, "seed": 1}) == {"world": "w", "n": 3}
    assert accepted_options(lambda **kw: kw, {"a": 1}) == {"a": 1}
    r = Registry("thing")
    r.register("p", probe_factory, settings={"top_k": 5})
    assert r.create("p", world="x", seed=9) == ("x", 10)
    assert r.settings("p") == {"top_k": 5} and r.settings("q") == {}
    r.register("lazy", "os.path:join")  # imported on first use
    assert r.create("lazy", "a", "b") == "a/b"
    r.unregister("p")
    assert "p" not in r and r.names() == ["lazy"]


@pytest.fixture
def registered(monkeypatch):
    """Every kind's "demo" replaced by a factory that records what it was called with."""
    calls = {}

    def record(kind, value):
        def factory(*args, **kw):
            calls[kind] = (args, kw)
            return value
        return factory

    images = np.zeros((2, 8, 8, 3), np.uint8)
    for module, name, kind, value in [
            (backbones, "BACKBONES", "backbone", "a backbone"),
            (clip, "CLIP_MODELS", "clip", "a clip"),
            (probes, "PROBES", "probe", ArrayProbe(images)),
            (vocabulary, "VOCABULARIES", "vocabulary", ListVocabulary(["a cat"]))]:
        registry = Registry(kind)
        registry.register("demo", record(kind, value), settings={"top_k": 7})
        monkeypatch.setattr(module, name, registry)
    return calls


def test_the_demo_world_is_built_through_the_registries(registered):
    cfg = WorkspaceConfig.demo(world="my-world.json", seed=3, probe_size=2)
    assert cfg.build_backbone() == "a backbone"
    assert cfg.build_clip() == "a clip"
    assert isinstance(cfg.build_probe(), ArrayProbe)
    assert len(cfg.build_vocabulary()) == 1
    (spec,), kw = registered["backbone"]
    assert spec.name == "demo" and kw == {"world": "my-world.json"}
    (spec,), kw = registered["clip"]
    assert spec.name == "demo" and kw == {"world": "my-world.json"}
    assert registered["probe"][1] == {"class_names_for_labels": None,
                                      "class_ids_for_labels": None, "world": "my-world.json",
                                      "n": 2, "seed": 3, "progress": None}
    assert registered["vocabulary"][1] == {"world": "my-world.json"}
    # the workspace's default settings come from the backbone preset's registration
    assert cfg.default_settings() == FalconSettings(top_k=7)


def test_default_settings_of_the_presets():
    # the demo backbone: the per-feature top-20 rule, and groups kept from 5 images (a quarter of
    # k: under top-20 a group's images are a subset of each member's 20)
    assert WorkspaceConfig.demo().default_settings() == FalconSettings(
        high_rule="topk", top_k=20, group_min_images=5)
    assert WorkspaceConfig(backbone="resnet18").default_settings() == FalconSettings()
    assert WorkspaceConfig(backbone="timm:vit_tiny_patch16_224").default_settings() == FalconSettings()


def test_create_probe_demo_and_its_ground_truth(monkeypatch, tmp_path):
    """``create_probe("demo")`` builds the demo probe set; its scenes come from the demo module,
    not from attributes on the probe object."""
    from falcon_core.demo.integration import demo_probe_truth

    monkeypatch.setenv("FALCON_CACHE", str(tmp_path))
    probe = create_probe("demo", n=12, seed=4, class_names_for_labels=["ignored"])
    world, scenes = demo_probe_truth(n=12, seed=4)
    from falcon_core.demo.scene_probe import SceneProbe

    # scenes rendered when loaded (issue 9: the app's first page does not render all 5,000)
    assert isinstance(probe, SceneProbe) and len(probe) == len(scenes) == 12
    assert list(probe.labels) == [world.label(s) for s in scenes]
    assert probe.class_names == world.class_names
    np.testing.assert_array_equal(np.asarray(probe.load(5)), world.render(scenes[5]))
    # a SceneProbe holds its scenes to render them on demand; callers read the ground truth
    # through demo_probe_truth (above), which gives the very scenes the probe renders
    assert probe.scenes == scenes
    assert "demo" in probes.available_probes()
