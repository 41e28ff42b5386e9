"""Stage 9: a classifier's mistakes explained through its features: :class:`FailureAnalyser`.

With the backbone's linear head ``U, b`` over the explained layer, the features that push image
``j`` toward class ``y`` are ranked by ``h_j ∘ U_y`` (:mod:`.stages.failures`). For a misclassified
image both sides are shown, toward the predicted and toward the true class, each feature with its
explanation (from the :class:`~falcon_core.explainer.Explainer`).

The probe set's labels are matched to the head's classes by class id (an ImageNet wnid, or the id
given with ``--class-names id=name``), else by a name no other class has (case, spaces and
punctuation ignored), so a folder of class subfolders works with any classifier that names its
classes, and two classes with the same name ("crane", the bird and the machine) stay apart. Names
that several classes share are shown with their id. Labels and class names are checked before
Stage 1 is computed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import FalconError
from .explainer import Explainer
from .models.classes import display_names
from .representation_store import RepresentationStore
from .settings import FalconSettings
from .stages import failures as failures_stage


@dataclass
class FailureExplanation:
    index: int
    id: str
    true_class: int
    true_name: str
    predicted_class: int
    predicted_name: str
    toward_predicted: list[dict[str, Any]] = field(default_factory=list)
    toward_true: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def side(items):
            out = []
            for it in items:
                exp = it.get("explanation")
                out.append({"feature": it["feature"], "contribution": it["contribution"],
                            "words": [c.text for c in exp.words] if exp else [],
                            "error": it.get("error")})
            return out

        d = {k: v for k, v in dataclasses.asdict(self).items()
             if k not in ("toward_predicted", "toward_true")}
        d["toward_predicted"] = side(self.toward_predicted)
        d["toward_true"] = side(self.toward_true)
        return d


def _class_key(name) -> str:
    """How a probe set's class name is matched to the head's: lower case, letters and digits."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def _match_classes(probe_ids, probe_names, head_ids, head_names) -> list[int]:
    """For each probe class, the head class with the same id, else the one head class with the
    same name (-1 when there is none, or when several head classes share the name)."""
    by_id = {str(i).casefold(): n for n, i in enumerate(head_ids)}
    by_name: dict[str, list[int]] = {}
    for n, name in enumerate(head_names):
        by_name.setdefault(_class_key(name), []).append(n)
    out = []
    for pid, pname in zip(probe_ids, probe_names):
        if str(pid).casefold() in by_id:
            out.append(by_id[str(pid).casefold()])
        else:
            named = by_name.get(_class_key(pname), [])
            out.append(named[0] if len(named) == 1 else -1)
    return out


class FailureAnalyser:
    """Stage 9 over one representation store and explainer (see the module docstring)."""

    def __init__(self, store: RepresentationStore, explainer: Explainer, prefill=None):
        self.store = store
        self.explainer = explainer
        self.backbone = store.backbone
        self.probe = store.probe
        # Catalogue.prefill (set by Falcon): the GradCAM and CLIP work of all the features that
        # drive a decision, done at once before each is explained (same results, less time).
        self.prefill = prefill

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """The linear head ``(U (o, r), b (o,))`` over the explained layer."""
        head = getattr(self.backbone, "head", None)
        if head is None:
            raise FalconError(
                "This backbone has no linear classifier head over the explained layer.",
                "Failure explanations need a classifier: use a backbone with its head (e.g. "
                "ResNet-18 ImageNet, the demo backbone) and the default layer.")
        U = head.weight.detach().cpu().numpy().astype(np.float32)
        b = (head.bias.detach().cpu().numpy().astype(np.float32) if head.bias is not None
             else np.zeros(U.shape[0], dtype=np.float32))
        return U, b

    def class_ids(self) -> list[str]:
        """The head's class ids (what labels are matched by; the names where no ids are known)."""
        ids = getattr(self.backbone, "class_ids", None) or getattr(self.backbone, "class_names",
                                                                   None)
        U, _ = self.head()
        return list(ids) if ids else [f"class {i}" for i in range(U.shape[0])]

    def class_names(self) -> list[str]:
        """The head's class names for display (a name several classes share gets its id)."""
        names = getattr(self.backbone, "class_names", None)
        U, _ = self.head()
        if not names:
            return [f"class {i}" for i in range(U.shape[0])]
        return display_names(self.class_ids(), names)

    def labels(self) -> np.ndarray:
        """True labels of the probe images in the classifier's class indices (-1: unknown)."""
        if not getattr(self.backbone, "class_names", None):
            raise FalconError(
                "The classifier's class names are unknown, so the probe set's labels cannot be "
                "matched to its outputs.",
                "Give them with the checkpoint (--class-names 'a,b,c', id=name pairs, or a file, "
                "one a line).")
        labels = getattr(self.probe, "labels", None)
        if labels is None:
            raise FalconError("The probe set has no true labels.",
                              "Use a labelled set: class subfolders named by class id or name, "
                              "CIFAR-10, Imagenette, or the demo world.")
        labels = np.asarray(labels, dtype=np.int64)
        probe_names = getattr(self.probe, "class_names", None)
        probe_ids = getattr(self.probe, "class_ids", None) or probe_names
        head_ids = self.class_ids()
        if probe_names and list(probe_ids) != head_ids:
            mapping = np.array(_match_classes(probe_ids, probe_names, head_ids,
                                              list(self.backbone.class_names)) + [-1])
            labels = np.where(labels >= 0, mapping[np.clip(labels, 0, len(probe_names))], -1)
        if not (labels >= 0).any():
            raise FalconError("None of the probe set's labels match the classifier's classes.",
                              "Name the class subfolders after the classifier's class ids (e.g. "
                              "ImageNet wnids) or names.")
        return labels

    def _known_labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(U, b, H, labels)`` with the labels of unreadable images set to -1 (unknown). The
        head, the class names and the labels are checked before Stage 1 is computed."""
        U, b = self.head()
        labels = self.labels()
        H, valid = self.store.representations()
        return U, b, H, np.where(valid, labels, -1)

    def failures(self) -> list[dict[str, Any]]:
        """Misclassified probe images with their true and predicted classes."""
        U, b, H, labels = self._known_labels()
        idx, preds = failures_stage.misclassified(np.nan_to_num(H), U, b, labels)
        names = self.class_names()
        return [{"index": int(i), "id": str(self.probe.ids[int(i)]), "true": int(labels[i]),
                 "true_name": names[int(labels[i])], "predicted": int(p),
                 "predicted_name": names[int(p)]} for i, p in zip(idx, preds)]

    def summary(self, top: int = 5, k: int = 3) -> dict[str, Any]:
        """Accuracy, the ``top`` most common confusions (true -> predicted class, with how many
        images) and, for each, the ``k`` features that drive it: ranked by their mean
        contribution ``h ∘ U_predicted`` over its images (Stage 9 summed over a confusion)."""
        U, b, H, labels = self._known_labels()
        H = np.nan_to_num(H)
        known = labels >= 0
        pred = failures_stage.predict(H, U, b)
        names = self.class_names()
        wrong = known & (pred != labels)
        pairs: dict[tuple[int, int], list[int]] = {}
        for i in np.flatnonzero(wrong):
            pairs.setdefault((int(labels[i]), int(pred[i])), []).append(int(i))
        ranked = sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[: max(int(top), 0)]
        confusions = []
        for (t, p), rows in ranked:
            mean_h = H[rows].astype(np.float64).mean(axis=0)
            drivers = failures_stage.top_features(mean_h, U, p, k)
            confusions.append({"true": t, "true_name": names[t], "predicted": p,
                               "predicted_name": names[p], "count": len(rows),
                               "images": rows,
                               "drivers": [{"feature": f, "contribution": c} for f, c in drivers]})
        n_known = int(known.sum())
        return {"images": int(len(labels)), "labelled": n_known,
                "accuracy": float((pred[known] == labels[known]).mean()) if n_known else float("nan"),
                "misclassified": int(wrong.sum()), "confusions": confusions}

    def accuracy(self) -> float:
        U, b, H, labels = self._known_labels()
        known = labels >= 0
        pred = (np.nan_to_num(H[known]) @ U.T + b).argmax(axis=1)
        return float((pred == labels[known]).mean()) if known.any() else float("nan")

    def explain_failure(self, index: int | None = None, k: int = 3, image=None,
                        true_class: int | None = None,
                        settings: FalconSettings | None = None) -> FailureExplanation:
        """Stage 9: the features that pushed an image toward its predicted and its true class."""
        U, b = self.head()
        names = self.class_names()
        if image is None:
            if index is None or not 0 <= int(index) < self.store.num_images:
                raise FalconError(f"Unknown probe image {index!r}: there are "
                                  f"{self.store.num_images}.")
            if true_class is None:
                true_class = int(self.labels()[int(index)])  # checked before Stage 1
            H, valid = self.store.representations()
            if not valid[int(index)]:
                raise FalconError(f"Probe image {index} could not be read: "
                                  f"{self.store.skipped_images.get(int(index), 'unreadable')}.")
            h = H[int(index)]
            ident = str(self.probe.ids[int(index)])
        else:
            h = self.store.image_features(image)
            ident = "uploaded image"
            index = -1
        if true_class is None or true_class < 0:
            true_class = -1
        if true_class < 0:  # unknown: rank toward the prediction only
            known = int(np.argmax(U @ np.nan_to_num(h) + b))
        else:
            known = true_class
        drivers = failures_stage.failure_drivers(h, U, b, known, k=k)

        if self.prefill is not None:
            shared = list(drivers.toward_predicted) + (list(drivers.toward_true)
                                                       if true_class >= 0 else [])
            try:
                self.prefill([int(f) for f, _ in shared], settings)
            except FalconError:  # each feature's explain() below says what is wrong
                pass

        def side(items):
            out = []
            for f, c in items:
                exp, err = self.explainer.try_explain(int(f), settings)
                out.append({"feature": int(f), "contribution": float(c), "explanation": exp,
                            "error": err})
            return out

        pred = int(drivers.predicted_class)
        return FailureExplanation(
            index=int(index), id=ident, true_class=int(true_class),
            true_name=names[true_class] if true_class >= 0 else "unknown",
            predicted_class=pred, predicted_name=names[pred],
            toward_predicted=side(drivers.toward_predicted),
            toward_true=side(drivers.toward_true) if true_class >= 0 else [])
