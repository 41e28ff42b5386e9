"""A head's classes (ids to match labels by, names to show) and Stage 9's summary, by hand."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from falcon_core.data.probes import ImageFolderProbe
from falcon_core.errors import FalconError
from falcon_core.failure_analyser import FailureAnalyser
from falcon_core.models.classes import (ClassList, display_names, imagenet_class_ids,
                                        parse_class_list)


# ---- --class-names ---------------------------------------------------------------------------

def test_class_list_forms(tmp_path):
    assert parse_class_list("cat, dog") == ClassList(["cat", "dog"], ["cat", "dog"])
    pairs = parse_class_list("n02012849=crane,n03126707=crane")
    assert pairs.ids == ["n02012849", "n03126707"] and pairs.names == ["crane", "crane"]
    assert pairs.display() == ["crane (n02012849)", "crane (n03126707)"]
    loc = tmp_path / "LOC_synset_mapping.txt"
    loc.write_text("n01440764 tench, Tinca tinca\nn02012849 crane\n\nn03126707 crane\n")
    assert parse_class_list(str(loc)) == ClassList(["n01440764", "n02012849", "n03126707"],
                                                   ["tench", "crane", "crane"])
    tabbed = tmp_path / "classes.tsv"
    tabbed.write_text("a1\tgreat white shark\nb2\ttiger shark\n")
    assert parse_class_list(str(tabbed)).names == ["great white shark", "tiger shark"]
    index = tmp_path / "imagenet_class_index.json"
    index.write_text(json.dumps({"1": ["n01443537", "goldfish"], "0": ["n01440764", "tench"]}))
    assert parse_class_list(str(index)) == ClassList(["n01440764", "n01443537"],
                                                     ["tench", "goldfish"])
    plain = tmp_path / "names.txt"
    plain.write_text("crane\ncrane\n")  # names only: a shared name stays ambiguous, no error
    assert parse_class_list(str(plain)).ids == ["crane", "crane"]
    with pytest.raises(FalconError, match="given twice"):
        parse_class_list("x=crane,x=heron")
    with pytest.raises(FalconError, match="No class names"):
        parse_class_list(" , ")
    assert parse_class_list(None) is None


def test_display_names_add_the_id_only_where_names_are_shared():
    assert display_names(["a", "b", "c"], ["crane", "Crane", "dog"]) == \
        ["crane (a)", "Crane (b)", "dog"]
    assert display_names(None, ["x", "x"]) == ["x", "x"]


def test_imagenet_ids_tell_the_two_cranes_apart():
    ids = imagenet_class_ids()
    assert ids is not None and len(ids) == 1000 and len(set(ids)) == 1000
    assert ids[0] == "n01440764"  # tench
    assert ids[134] == "n02012849" and ids[517] == "n03126707"  # crane (bird), crane (machine)
    assert ids[638] == "n03710637" and ids[639] == "n03710721"  # the two maillots


# ---- class folders -----------------------------------------------------------------------------

def _folder(root, names):
    for n in names:
        (root / n).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / n / "x.png")
    return root


def test_folders_match_by_id_and_a_shared_name_matches_none(tmp_path):
    root = _folder(tmp_path, ["n03126707", "crane", "Dog"])
    ids, names = ["n02012849", "n03126707", "d1"], ["crane", "crane", "dog"]
    p = ImageFolderProbe(root, class_names_for_labels=names, class_ids_for_labels=ids)
    labels = dict(zip(p.ids, p.labels.tolist()))
    assert labels == {"Dog/x.png": 2, "crane/x.png": -1, "n03126707/x.png": 1}
    assert p.ambiguous_folders == {"crane": ["n02012849", "n03126707"]}
    assert p.unmatched_folders == [] and p.class_ids == ids
    assert p.describe()["ambiguous_folders"] == {"crane": ["n02012849", "n03126707"]}


# ---- Stage 9 by hand ---------------------------------------------------------------------------

class _Store:
    """Representations worked out by hand; counts whether Stage 1 was asked for."""

    def __init__(self, H, backbone, probe):
        self.H, self.backbone, self.probe = np.asarray(H, np.float32), backbone, probe
        self.calls = 0
        self.num_images = len(H)

    def representations(self):
        self.calls += 1
        return self.H, np.ones(len(self.H), bool)


def _analyser(labels, class_names=("a", "b"), class_ids=None, probe_names=None):
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))  # class a reads feature 0, class b feature 1
        head.bias.zero_()
    backbone = SimpleNamespace(head=head, class_names=list(class_names) if class_names else None,
                               class_ids=list(class_ids or class_names or []) or None)
    probe = SimpleNamespace(labels=None if labels is None else np.asarray(labels),
                            class_names=probe_names, class_ids=None,
                            ids=[f"img{i}" for i in range(4)])
    store = _Store([[1, 0], [0, 1], [1, 1], [2, 0]], backbone, probe)
    return FailureAnalyser(store, explainer=None), store


def test_summary_by_hand():
    # logits = h: image 0 -> a (true b: wrong); 1 -> b; 2 -> a (tie, lower index; true a);
    # 3 -> a (true a)
    fa, _ = _analyser([1, 1, 0, 0])
    s = fa.summary(top=5, k=2)
    assert s["accuracy"] == pytest.approx(0.75) and s["misclassified"] == 1
    (conf,) = s["confusions"]
    assert (conf["true_name"], conf["predicted_name"], conf["count"]) == ("b", "a", 1)
    assert conf["images"] == [0]
    # mean h over the confused image = (1, 0); toward a: feature 0 gives 1, feature 1 gives 0
    assert conf["drivers"] == [{"feature": 0, "contribution": 1.0},
                               {"feature": 1, "contribution": 0.0}]


def test_labels_and_class_names_are_checked_before_stage_1():
    fa, store = _analyser([1, 1, 0, 0], class_names=None)
    with pytest.raises(FalconError, match="class names are unknown"):
        fa.failures()
    with pytest.raises(FalconError, match="class names are unknown"):
        fa.explain_failure(0)
    fa, store2 = _analyser(None)
    with pytest.raises(FalconError, match="no true labels"):
        fa.summary()
    assert store.calls == store2.calls == 0


def test_probe_names_map_to_head_classes_by_a_unique_name_only():
    # the probe's class 0 is "crane", which two head classes share: unknown, not the first
    fa, _ = _analyser([0, 1, 0, 1], class_names=("crane", "crane"), class_ids=("n1", "n2"),
                      probe_names=["Crane", "n2"])
    assert fa.labels().tolist() == [-1, 1, -1, 1]  # "n2" matches by id
    assert fa.class_names() == ["crane (n1)", "crane (n2)"]
