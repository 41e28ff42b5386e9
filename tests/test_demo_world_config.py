"""World-config validation (issue 8): whatever the JSON, only WorldConfigError comes out, with a
message that names what is wrong."""

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falcon_core.demo.world import World, WorldConfigError, load_world


def _raw():
    return copy.deepcopy(load_world().raw)


def _set(path):
    def mutate(d, value):
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return mutate


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (where, bad value, a word the message must contain)
CASES = [
    (("attributes", "size", "small", "scale"), ["0.1", "0.2"], "scale"),
    (("attributes", "size", "small", "scale"), [float("nan"), 0.2], "scale"),
    (("attributes", "size", "small", "scale"), [0.1, 10 ** 400], "scale"),
    (("attributes", "size", "small", "scale"), "0.1-0.2", "scale"),
    (("attributes", "shape", "star", "phrases"), [1, 2], "phrases"),
    (("attributes", "shape", "star", "phrases"), "star", "phrases"),
    (("attributes", "shape", "star", "phrases"), [""], "phrases"),
    (("attributes", "shape", "star", "phrases"), ["the"], "names none"),
    (("attributes", "shape", "star", "words"), "star", "words"),
    (("attributes", "shape", "star", "words"), [None], "words"),
    (("attributes", "shape", "star", "draw"), ["star"], "draw"),
    (("attributes", "shape", "star", "draw"), {"a": 1}, "draw"),
    (("attributes", "pattern", "plain", "draw"), ["plain"], "draw"),
    (("attributes", "pattern", "striped", "with"), [["stripes"]], "with"),
    (("attributes", "background", "grass", "texture"), ["blades"], "texture"),
    (("attributes", "background", "grass", "colors"), [[1, 2, "3"], [1, 2, 3]], "colors"),
    (("attributes", "color", "red", "rgb"), [True, 0, 0], "rgb"),
    (("attributes", "color", "red", "rgb"), [255.5, 0, 0], "rgb"),
    (("attributes", "color"), [], "color"),
    (("attributes", "color"), {f"c{i}": {} for i in range(40)}, "color"),
    (("attributes",), [], "attributes"),
    (("correlations",), [{"if": {"shape": ["star"]}, "then": {"background": "grass"}, "p": 0.8}], "correlation #0"),
    (("correlations",), [{"if": {"shape": "star"}, "then": {"background": {"x": 1}}, "p": 0.8}], "correlation #0"),
    (("correlations",), [{"if": {"shape": "star"}, "then": {"background": "grass"}, "p": "0.8"}], "'p'"),
    (("correlations",), [{"if": {"shape": "star"}, "then": {"background": "grass"}, "p": float("nan")}], "'p'"),
    (("correlations",), [{"if": {"shape": "star"}, "then": {"background": "grass"}, "p": True}], "'p'"),
    (("correlations",), [["star", "grass"]], "correlation #0"),
    (("correlations",), {"if": 1}, "correlations"),
    (("image_size",), "64", "image_size"),
    (("image_size",), 64.0, "image_size"),
    (("image_size",), 10 ** 30, "image_size"),
    (("two_objects_p",), float("inf"), "two_objects_p"),
    (("two_objects_p",), True, "two_objects_p"),
    (("class_attribute",), ["shape"], "class_attribute"),
    (("name",), 5, "name"),
    (("description",), {"x": 1}, "description"),
]


@pytest.mark.parametrize("where, value, word", CASES, ids=[f"{'.'.join(c[0])}={str(c[1])[:20]}" for c in CASES])
def test_wrong_types_inside_give_world_config_error(where, value, word):
    d = _raw()
    _set(where)(d, value)
    with pytest.raises(WorldConfigError) as e:
        World.from_dict(d)
    assert word in str(e.value) and "Invalid world config" in str(e.value)


@pytest.mark.parametrize("content, word", [
    (b"\xff\xfe{ not utf-8 \x80", "not UTF-8"),
    (("{\"name\": " + _nested(100_000) + "}").encode(), "nested too deeply"),
    (b"{\"name\": \"x\", \"image_size\": " + b"9" * 5000 + b"}", "JSON"),
    (b"[1, 2, 3]", "top level"),
    (b"null", "top level"),
    (b"", "JSON"),
])
def test_bad_files_give_world_config_error(tmp_path, content, word):
    p = tmp_path / "w.json"
    p.write_bytes(content)
    with pytest.raises(WorldConfigError) as e:
        load_world(p)
    assert word in str(e.value)


def test_deep_nesting_in_an_unknown_key_and_bad_paths(tmp_path):
    d = _raw()
    deep = []
    for _ in range(5000):
        deep = [deep]
    d["notes"] = deep
    with pytest.raises(WorldConfigError, match="nested too deeply"):
        World.from_dict(d)
    with pytest.raises(WorldConfigError):
        load_world(tmp_path)  # a folder
    with pytest.raises(WorldConfigError):
        load_world("bad\0path.json")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 << 20))
    with pytest.raises(WorldConfigError, match="larger than"):
        load_world(big)


# --------------------------------------------------------------------------------------------
# fuzz: random JSON values put anywhere in a valid config, and random JSON documents
# --------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 400), max_value=10 ** 400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


BASE = load_world().raw
ALL_PATHS = [p for p in _paths(BASE) if p]


def _check(data):
    try:
        w = World.from_dict(data)
    except WorldConfigError as e:
        assert str(e).startswith("Invalid world config"), str(e)
        return
    # a config that validates must also work: sample, caption and render a scene
    import numpy as np

    from falcon_core.demo import captions as C

    rng = np.random.default_rng(0)
    s = w.sample_scene(rng)
    C.scene_caption(w, s, rng)
    C.object_caption(w, s, 0, rng)
    assert w.render(s, 32).shape == (32, 32, 3)
    assert isinstance(w.hash, str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(ALL_PATHS), value=json_values, drop=st.booleans())
def test_fuzz_one_value_anywhere(path, value, drop):
    d = copy.deepcopy(BASE)
    node = d
    for k in path[:-1]:
        node = node[k]
    if drop and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    _check(d)


@settings(max_examples=150, deadline=None)
@given(doc=json_values)
def test_fuzz_any_json_document(doc):
    _check(doc)


@settings(max_examples=150, deadline=None)
@given(content=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()))
def test_fuzz_any_file(tmp_path_factory, content):
    p = tmp_path_factory.mktemp("fuzz") / "w.json"
    p.write_bytes(content)
    try:
        load_world(p)
    except WorldConfigError:
        pass


def test_a_valid_config_still_loads():
    w = World.from_dict(_raw())
    assert w.hash == load_world().hash
    assert not any(math.isnan(r["p"]) for r in w.correlations)
