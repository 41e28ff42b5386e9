"""Links are untrusted input: they choose among what the server allows, never a path of their own,
and every value in them is bounded. Pure functions (no Streamlit); the app itself is tested in
test_app_safety.py and test_browser_safety.py."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from falcon_core.cache import DiskCache
from falcon_core.errors import FalconError
from falcon_core.settings import LIMITS, FalconSettings, check_setting
from falcon_core.workspace import WorkspaceConfig
from ui import links, state
from ui.links import LinkError, LinkPolicy, WorkspaceRegistry

SYSTEM_FILE = "/etc/passwd" if Path("/etc/passwd").is_file() else "/etc/hostname"


@pytest.fixture
def data(tmp_path):
    """A data root with an image folder, a caption file and a checkpoint; and a file outside."""
    root = tmp_path / "data"
    (root / "images" / "cats").mkdir(parents=True)
    (root / "captions.txt").write_text("a cat\n")
    (root / "weights.pth").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n")
    (root / "escape.txt").symlink_to(outside)  # a link inside the root to a file outside it
    return {"root": root, "outside": outside}


def policy(tmp_path, roots=(), allow_paths=False) -> LinkPolicy:
    return LinkPolicy(roots=[Path(os.path.realpath(r)) for r in roots],
                      registry=WorkspaceRegistry(DiskCache(tmp_path / "cache")),
                      allow_paths=allow_paths)


# ---- paths -----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("vocabulary", SYSTEM_FILE), ("vocabulary", "laion:/"), ("probe", "/"),
    ("probe", "folder:/etc"), ("weights", SYSTEM_FILE), ("clip_pretrained", SYSTEM_FILE),
    ("clip", "/etc/x.json"), ("world", SYSTEM_FILE), ("class_names", SYSTEM_FILE),
    ("vocabulary", "README.md"), ("probe", "~"), ("probe", "."), ("weights", "../x.pth")])
def test_a_server_path_in_a_link_is_refused(tmp_path, field, value):
    dec = state.decode({field: value}, policy(tmp_path))
    assert dec.workspace == {}
    assert len(dec.problems) == 1
    assert dec.problems[0].startswith(f"Ignored '{field}=")
    assert "cannot name files or folders of this server" in dec.problems[0]
    assert "FALCON_DATA_ROOTS" in dec.problems[0]  # what the operator can do


def test_paths_under_a_data_root_are_allowed_and_nothing_else(tmp_path, data):
    pol = policy(tmp_path, [data["root"]])
    root = data["root"]
    dec = state.decode({"probe": str(root / "images"), "vocabulary": str(root / "captions.txt"),
                        "weights": str(root / "weights.pth"), "backbone": "resnet18"}, pol)
    assert dec.problems == []
    assert dec.workspace["probe"] == os.path.realpath(root / "images")
    assert dec.workspace["vocabulary"] == os.path.realpath(root / "captions.txt")
    # outside, by a symlink, by '..', the wrong kind, missing: refused
    for field, value, words in [
            ("vocabulary", str(data["outside"]), "cannot name files"),
            ("vocabulary", str(root / "escape.txt"), "cannot name files"),
            ("vocabulary", str(root / "images" / ".." / ".." / "secret.txt"), "cannot name"),
            ("probe", str(root / "captions.txt"), "must be a folder"),
            ("weights", str(root / "images"), "must be a file"),
            ("probe", str(root / "nothing"), "nothing is at that place")]:
        dec = state.decode({field: value}, pol)
        assert dec.workspace == {}, (field, value)
        assert words in dec.problems[0], dec.problems


def test_the_filesystem_root_is_never_a_data_root(tmp_path):
    assert links.data_roots({links.DATA_ROOTS_ENV: f"/{os.pathsep}{tmp_path}"}) == \
        [Path(os.path.realpath(tmp_path))]
    assert links.data_roots({}) == []


def test_presets_pass_and_other_names_do_not(tmp_path):
    pol = policy(tmp_path)
    ok = {"backbone": "resnet50", "weights": "imagenet", "clip": "ViT-B-32",
          "clip_pretrained": "openai", "probe": "cifar10", "world": "alt", "layer": "layer3",
          "token_pool": "mean", "class_names": "cat,dog", "seed": "3", "probe_size": "300"}
    dec = state.decode(ok, pol)
    assert dec.problems == []
    assert dec.workspace["seed"] == 3 and dec.workspace["probe_size"] == 300
    for field, value in [("backbone", "timm:vit_giant_patch14_224"), ("clip", "ViT-bigG-14"),
                         ("clip_pretrained", "laion2b_s39b_b160k"), ("token_pool", "all"),
                         ("layer", "layer4; rm -rf"), ("world", "other")]:
        dec = state.decode({field: value}, pol)
        assert dec.workspace == {} and dec.problems, (field, value)


# ---- bounds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("params, words", [
    ({"probe_size": "2000000"}, "probe_size must be between 100 and 20000"),
    ({"probe_size": "99"}, "between 100 and 20000"),
    ({"seed": "99999999999999"}, "seed must be between 0 and"),
    ({"seed": "-1"}, "seed must be between"),
    ({"beta": "5"}, "beta=5.0 is out of range: it must be between -1 and 1"),
    ({"beta": "-1.5"}, "between -1 and 1"),
    ({"spurious_threshold": "7"}, "between 0 and 1"),
    ({"top_k": "0"}, "between 1 and 1000"),
    ({"max_low_images": "1000000"}, "between 0 and 100"),
    ({"alpha_std": "nan"}, "finite"),
    ({"low_threshold": "inf"}, "finite"),
    ({"feature": "-1"}, "feature must be between 0 and"),
    ({"feature": "99999999999"}, "feature must be between 0 and"),
    ({"image": "1" * 60}, "at most 40 characters"),
    ({"features": "3,99999999"}, "features must be between 0 and"),
    ({"word": "w" * 300}, "at most 200 characters"),
])
def test_out_of_bounds_values_get_the_usual_notice(tmp_path, params, words):
    dec = state.decode(params, policy(tmp_path))
    assert dec.workspace == {} and dec.settings == {} and dec.selection == {}
    (k, v), = params.items()
    assert len(dec.problems) == 1
    assert dec.problems[0].startswith(f"Ignored '{k}=")
    assert words in dec.problems[0], dec.problems[0]


def test_a_group_holds_at_most_eight_features(tmp_path):
    dec = state.decode({"features": ",".join(map(str, range(20)))}, policy(tmp_path))
    assert dec.selection == {"features": list(range(8))}
    assert "at most 8" in dec.problems[0]


def test_every_setting_has_a_range_and_every_range_is_a_setting():
    names = {f.name for f in dataclasses.fields(FalconSettings)}
    assert set(LIMITS) == names
    for name, lim in LIMITS.items():
        default = getattr(FalconSettings(), name)
        assert check_setting(name, default) == default  # the authors' value is inside
        if lim.choices is None:
            assert lim.lo <= lim.hi
            with pytest.raises(FalconError) as e:
                check_setting(name, lim.hi + 1)
            assert e.value.hint and name in e.value.hint


def test_sliders_and_number_boxes_read_the_same_table():
    for name, lim in LIMITS.items():
        if lim.choices is None:
            lo, hi = state.bounds(name)
            assert (lo, hi) == (lim.lo, lim.hi)
    assert isinstance(state.bounds("top_k")[0], int) and isinstance(state.bounds("beta")[0],
                                                                      float)
    # the pages ask for their ranges from the table, not literals
    root = Path(__file__).resolve().parents[1]
    # the Spurious page's sliders (their logic lives in ui/contrast.py)
    contrast = (root / "ui" / "contrast.py").read_text()
    assert 'state.bounds(name) for name in ("beta", "spurious_threshold",' in contrast
    assert 'state.bounds("low_threshold")' in contrast
    # the Setup page's form: one row per setting, every number widget ranged by state.bounds
    setup = (root / "pages" / "setup.py").read_text()
    assert "low, high = state.bounds(name)" in setup
    for name in ("alpha_std", "top_k", "quantile", "cam_threshold", "cam_box_margin",
                 "captions_per_image",
                 "top_words", "top_phrases", "coherence_threshold"):
        assert f'("{name}", ' in setup, name


# ---- opaque workspace ids ---------------------------------------------------------------------

def test_a_workspace_with_paths_goes_into_a_link_as_an_opaque_id(tmp_path, data):
    pol = policy(tmp_path)  # no data roots: the path was typed on the Setup page
    ws = WorkspaceConfig(backbone="resnet18", weights=str(data["root"] / "weights.pth"),
                         probe=str(data["root"] / "images"),
                         vocabulary=str(data["root"] / "captions.txt"))
    params = state.encode(ws, FalconSettings(), {"feature": 3}, ["feature"], policy=pol)
    assert set(params) == {"ws", "feature"}
    assert not any(str(tmp_path) in v or "/" in v for v in params.values()), params
    dec = state.decode(params, pol)
    assert dec.problems == []
    assert WorkspaceConfig.demo().replace(**dec.workspace) == ws
    # the same workspace gets the same id; another one another id
    assert pol.workspace_id(ws) == params["ws"]
    assert pol.workspace_id(ws.replace(layer="layer3")) != params["ws"]


def test_an_unknown_workspace_id_is_refused_with_a_message(tmp_path, data):
    here, there = policy(tmp_path / "a"), policy(tmp_path / "b")
    ws = WorkspaceConfig(probe=str(data["root"] / "images"))
    wid = here.workspace_id(ws)
    assert state.decode({"ws": wid}, here).problems == []
    for value in (wid, "0" * 16, "not-an-id", "../../etc/passwd", ""):
        dec = state.decode({"ws": value, "feature": "2"}, there)
        assert dec.workspace == {}
        assert dec.selection == {"feature": 2}  # the rest of the link still works
        assert dec.problems and dec.problems[0].startswith("Ignored 'ws=")
    assert "does not know the workspace" in state.decode({"ws": wid}, there).problems[0]
    assert "demo world" in state.decode({"ws": wid}, there).problems[0]


def test_a_tampered_registry_entry_does_not_resolve(tmp_path, data):
    pol = policy(tmp_path)
    wid = pol.workspace_id(WorkspaceConfig(probe=str(data["root"] / "images")))
    # an entry whose content is not the workspace its id was made from (edited by hand)
    pol.registry.cache.write_json(links.REGISTRY_NAMESPACE, wid,
                                  WorkspaceConfig(probe="/").to_dict())
    dec = state.decode({"ws": wid}, pol)
    assert dec.workspace == {} and "does not know" in dec.problems[0]


def test_typed_paths_only_when_the_operator_allows_them():
    assert not links.paths_allowed({})  # off by default: the server cannot tell who reaches it
    assert not links.paths_allowed({links.ALLOW_PATHS_ENV: "0"})
    assert not links.paths_allowed({links.ALLOW_PATHS_ENV: "maybe"})
    assert links.paths_allowed({links.ALLOW_PATHS_ENV: "1"})
    assert links.paths_allowed({links.ALLOW_PATHS_ENV: "true"})


def test_candidates_list_only_what_is_under_the_roots(tmp_path, data):
    pol = policy(tmp_path, [data["root"]])
    root = os.path.realpath(data["root"])
    folders = pol.candidates("probe")
    assert os.path.join(root, "images") in folders and os.path.join(root, "images", "cats") \
        in folders
    assert pol.candidates("vocabulary") == [os.path.join(root, "captions.txt")] or \
        set(pol.candidates("vocabulary")) == {os.path.join(root, "captions.txt"),
                                              os.path.join(root, "escape.txt")}
    assert pol.candidates("weights") == [os.path.join(root, "weights.pth")]
    assert policy(tmp_path).candidates("probe") == []


# ---- fuzz: nothing in a link raises, and nothing outside what is allowed comes through ----------

KEYS = list(state.WORKSPACE_FIELDS) + list(state.SETTINGS_FIELDS) + list(state.SELECTION_KEYS) \
    + ["ws", "utm_source"]
NASTY = st.sampled_from(["", " ", "nan", "inf", "-inf", "1e309", "-0", "0x10", "1_000", "٣",
                         "None", "default", "true", "/", "/etc/passwd", "laion:/", "folder:/",
                         "~", "..", "../../x", "\x00", "a\nb", "9" * 5000, "1" * 30, "3,9",
                         "-1", "2147483648", "0123456789abcdef", "demo", "cifar10", "resnet18",
                         "1.5", "1e-300", "\ud800", "é" * 3000])
VALUES = st.one_of(NASTY, st.text(max_size=60), st.integers().map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
PARAMS = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)),
                         st.one_of(VALUES, st.lists(VALUES, max_size=3)), max_size=8)


@hsettings(max_examples=400, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(params=PARAMS)
def test_fuzz_decode_never_raises_and_lets_through_only_allowed_values(tmp_path, params):
    pol = policy(tmp_path)
    dec = state.decode(params, pol)
    assert all(isinstance(p, str) and p.startswith("Ignored") for p in dec.problems)
    # every workspace value is a choice (no data roots here: no path at all)
    for k, v in dec.workspace.items():
        assert pol.is_choice(k, v), (k, v)
    ws = WorkspaceConfig.demo().replace(**dec.workspace)
    assert not pol.needs_id(ws)
    if "probe_size" in dec.workspace:
        assert 100 <= dec.workspace["probe_size"] <= 20000
    FalconSettings().replace(**dec.settings)  # the settings are valid together
    for k, v in dec.selection.items():
        lo, hi = links.SELECTION_INT_BOUNDS.get(k, (0, 0))
        if isinstance(v, int):
            assert lo <= v <= hi
        elif isinstance(v, list):
            assert len(v) <= state.MAX_GROUP and all(lo <= x <= hi for x in v)
        else:
            assert isinstance(v, str) and len(v) <= links.MAX_WORDS
    # what was accepted encodes back into a link without a path
    out = state.encode(ws, FalconSettings().replace(**dec.settings), dec.selection,
                       list(dec.selection), policy=pol)
    assert all(isinstance(v, str) for v in out.values())


@hsettings(max_examples=300, deadline=None)
@given(name=st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), value=VALUES)
def test_fuzz_the_checkers_raise_only_the_projects_errors(name, value):
    pol = LinkPolicy()
    for fn in (lambda: pol.check_field(name, value),
               lambda: state.parse_setting(name, value),
               lambda: check_setting(name, state.parse_setting(name, value)),
               lambda: state.parse_int(value, name), lambda: state.parse_ints(value, name),
               lambda: pol.resolve(value)):
        try:
            fn()
        except FalconError:
            pass


@hsettings(max_examples=200, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(params=PARAMS, inside=st.sampled_from(["images", "images/cats", "captions.txt",
                                              "weights.pth", "escape.txt", "nothing", "..",
                                              "images/../../secret.txt", "\ud800"]),
       field=st.sampled_from(links.PATH_FIELDS))
def test_fuzz_with_a_data_root_only_paths_inside_it_come_through(tmp_path_factory, params,
                                                                 inside, field):
    base = tmp_path_factory.getbasetemp() / "fuzz-root"
    root = base / "data"
    if not root.exists():
        (root / "images" / "cats").mkdir(parents=True)
        (root / "captions.txt").write_text("a cat\n")
        (root / "weights.pth").write_bytes(b"x")
        (base / "secret.txt").write_text("s")
        (root / "escape.txt").symlink_to(base / "secret.txt")
    pol = LinkPolicy(roots=[Path(os.path.realpath(root))])
    params = dict(params)
    params[field] = str(root / inside)
    dec = state.decode(params, pol)
    real_root = os.path.realpath(root)
    for k, v in dec.workspace.items():
        if not pol.is_choice(k, v):
            path = str(v)[len("laion:"):] if str(v).startswith("laion:") else str(v)
            assert os.path.commonpath([os.path.realpath(path), real_root]) == real_root, (k, v)
            assert os.path.exists(path)


def test_fields_that_may_be_unset_can_be_unset(tmp_path):
    dec = state.decode({"class_names": "", "weights": "None", "clip_pretrained": "",
                        "world": "", "layer": ""}, policy(tmp_path))
    assert dec.problems == []
    assert dec.workspace == {"class_names": None, "weights": None, "clip_pretrained": None,
                             "world": None, "layer": None}
    pol = policy(tmp_path)
    for k, v in WorkspaceConfig(backbone="resnet18", weights="imagenet").to_dict().items():
        assert pol.check_field(k, v) == v  # every field of a preset workspace passes as it is
    for field in ("backbone", "clip", "probe", "vocabulary", "token_pool"):
        assert state.decode({field: ""}, pol).problems  # these always have a value
