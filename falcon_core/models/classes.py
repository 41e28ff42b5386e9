"""A classifier head's classes: an id for each output (what labels are matched by) and a name
for display.

Two classes may share a name (ImageNet has two "crane" and two "maillot" classes), so labels are
matched by id — an ImageNet folder id (wnid, ``n03126707``) or whatever the user gives — and a
name is only shown. Where no ids are known, the names serve as ids.

``--class-names`` (:func:`parse_class_list`) takes, in the head's order:

* ``"a,b,c"`` — names (the ids are the names);
* ``"n02012849=crane,n03126707=crane"`` — id=name pairs;
* a text file, one class a line: ``name``, ``id=name``, ``id<TAB>name``, or ImageNet's
  ``LOC_synset_mapping.txt`` form ``n01440764 tench, Tinca tinca`` (a wnid, a space, the names;
  the first name is shown);
* a JSON file: ``{"0": ["n01440764", "tench"], ...}`` (``imagenet_class_index.json``), an
  object ``{id: name}`` in the head's order, or a list of names.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import FalconError

_WNID = re.compile(r"^(n\d{8})\s+(.+)$")


@dataclass(frozen=True)
class ClassList:
    ids: list[str]
    names: list[str]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise FalconError(f"{len(self.ids)} class ids for {len(self.names)} class names.")
        seen: dict[str, int] = {}
        for i, (cid, name) in enumerate(zip(self.ids, self.names)):
            if cid == name:  # no id given: a shared name stays ambiguous (said when matching)
                continue
            if cid.casefold() in seen:
                raise FalconError(f"The class id {cid!r} is given twice (classes "
                                  f"{seen[cid.casefold()]} and {i}).",
                                  "Give every output of the head its own id, e.g. its wnid.")
            seen[cid.casefold()] = i

    def __len__(self) -> int:
        return len(self.ids)

    def display(self) -> list[str]:
        """The names, with the id added to a name that several classes share
        ("crane (n03126707)")."""
        return display_names(self.ids, self.names)


def display_names(ids: Sequence[str] | None, names: Sequence[str]) -> list[str]:
    """``names``, each one shared by several classes followed by its id in brackets."""
    names = [str(n) for n in names]
    if not ids:
        return names
    counts: dict[str, int] = {}
    for n in names:
        counts[n.casefold()] = counts.get(n.casefold(), 0) + 1
    return [f"{n} ({i})" if counts[n.casefold()] > 1 and str(i) != n else n
            for i, n in zip(ids, names)]


def _pair(item: str) -> tuple[str, str]:
    """One class from a line or a list item: ``(id, name)``."""
    item = item.strip()
    for sep in ("\t", "="):
        if sep in item:
            cid, name = item.split(sep, 1)
            cid, name = cid.strip(), name.strip()
            if cid and name:
                return cid, name
    m = _WNID.match(item)
    if m:
        return m.group(1), m.group(2).split(",")[0].strip()
    return item, item


def _from_json(data) -> list[tuple[str, str]]:
    if isinstance(data, list):
        return [_pair(str(x)) if not isinstance(x, (list, tuple)) else (str(x[0]), str(x[1]))
                for x in data]
    if isinstance(data, dict):
        items = list(data.items())
        if items and all(k.isdigit() and isinstance(v, (list, tuple)) and len(v) >= 2
                         for k, v in items):  # imagenet_class_index.json
            return [(str(v[0]), str(v[1]).replace("_", " ")) for _, v in
                    sorted(items, key=lambda kv: int(kv[0]))]
        return [(str(k), str(v)) for k, v in items]
    raise FalconError("The class-names JSON file must hold a list or an object.")


def parse_class_list(spec: str | Sequence[str] | None) -> ClassList | None:
    """The classes given with a checkpoint (formats in the module docstring), or None."""
    if spec is None:
        return None
    if isinstance(spec, str):
        path = Path(os.path.expanduser(spec))
        if path.is_file():
            text = path.read_text("utf-8")
            if path.suffix.lower() == ".json":
                try:
                    pairs = _from_json(json.loads(text))
                except json.JSONDecodeError as e:
                    raise FalconError(f"The class-names file {path} is not valid JSON ({e}).") from e
            else:
                pairs = [_pair(line) for line in text.splitlines() if line.strip()]
        else:
            pairs = [_pair(p) for p in spec.split(",") if p.strip()]
    else:
        pairs = [_pair(str(p)) for p in spec if str(p).strip()]
    if not pairs:
        raise FalconError("No class names were given.",
                          "Give them as 'a,b,c', as id=name pairs, or as a file, one a line.")
    return ClassList([p[0] for p in pairs], [p[1] for p in pairs])


def imagenet_class_ids() -> list[str] | None:
    """The 1,000 ImageNet-1k wnids in the usual class order (from timm's bundled tables), or
    None when timm is not installed."""
    try:
        from timm.data import ImageNetInfo

        return list(ImageNetInfo("imagenet-1k").label_names())
    except Exception:  # noqa: BLE001 - optional: without it the names serve as ids
        return None
