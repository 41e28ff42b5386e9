"""The served app and hostile links (Streamlit's AppTest; the same in a real browser:
test_browser_safety.py). A link chooses among what the server allows: a server path in it is
refused with a notice, every number in it is bounded, and nothing in it gives a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from makers import make_tiny_world

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 900
SYSTEM_FILE = "/etc/passwd" if Path("/etc/passwd").is_file() else "/etc/hostname"


def run(page: str | None = None, params: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if page is None:
        for k, v in (params or {}).items():
            at.query_params[k] = v
        at.run()
        return at
    at.run()
    at.switch_page(page)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    return at


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def everything(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "warning", "error", "info", "success", "subheader",
                 "title", "text", "code", "json"):
        parts += texts(getattr(at, kind, []) or [])
    return "\n".join(parts)


def no_traceback(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert "Traceback" not in everything(at)


def on_the_demo_world(at) -> bool:
    return "offline demo world" in " ".join(texts(at.sidebar.caption))


@pytest.mark.parametrize("params, shown", [
    ({"vocabulary": SYSTEM_FILE}, f"Ignored 'vocabulary={SYSTEM_FILE}' in the link"),
    ({"probe": "/"}, "Ignored 'probe=/' in the link"),
    ({"weights": SYSTEM_FILE}, "Ignored 'weights="),
    ({"world": SYSTEM_FILE}, "Ignored 'world="),
    ({"probe_size": "2000000"}, "probe_size must be between 100 and 20000"),
    ({"seed": "1" * 30}, "Ignored 'seed="),
    ({"ws": "0123456789abcdef"}, "does not know the workspace 0123456789abcdef"),
])
def test_a_hostile_link_gets_a_notice_and_the_demo_world(params, shown):
    at = run(params=params)
    no_traceback(at)
    assert any(shown in w for w in texts(at.warning)), texts(at.warning)
    assert on_the_demo_world(at)
    page = everything(at)
    assert "root:x:0:0" not in page and "/bin/bash" not in page
    for k in params:  # the refused value is gone from the URL
        assert at.query_params.get(k) in (None, "", [])


@pytest.mark.parametrize("params, shown", [
    ({"beta": "5"}, "beta=5.0 is out of range: it must be between -1 and 1"),
    ({"spurious_threshold": "7"}, "spurious_threshold=7.0 is out of range"),
    ({"beta": "-1.5"}, "between -1 and 1"),
    ({"max_low_images": "100000"}, "between 0 and 100"),
    ({"low_threshold": "nan"}, "finite"),
])
def test_spurious_sliders_and_out_of_range_links(params, shown):
    at = run("pages/spurious_concepts.py", params)
    no_traceback(at)
    assert any(shown in w for w in texts(at.warning)), texts(at.warning)


def test_spurious_sliders_take_every_value_of_the_settings_range():
    at = run("pages/spurious_concepts.py", {"beta": "-1", "max_low_images": "100",
                                            "spurious_threshold": "1"})
    no_traceback(at)
    assert not at.warning
    sliders = {s.key: s for s in at.slider}
    assert sliders["w:beta"].value == -1.0 and sliders["w:beta"].min == -1.0
    assert sliders["w:max_low_images"].value == 100 and sliders["w:max_low_images"].max == 100
    assert sliders["w:spurious_threshold"].value == 1.0


def test_a_feature_or_image_the_workspace_does_not_have():
    at = run(params={"feature": "100000"})
    no_traceback(at)
    assert any("Ignored 'feature=100000' in the link: this workspace has 128 features" in w
               for w in texts(at.warning))
    at = run("pages/failures.py", {"image": "99999"})
    no_traceback(at)
    assert any("Ignored 'image=99999' in the link: this workspace has 5000 images" in w
               for w in texts(at.warning))


def test_typed_paths_are_off_unless_the_operator_allows_them(monkeypatch, tmp_path):
    monkeypatch.delenv("FALCON_ALLOW_PATHS", raising=False)
    monkeypatch.delenv("FALCON_DATA_ROOTS", raising=False)
    at = run("pages/setup.py")
    no_traceback(at)
    folder = len(at.selectbox(key="setup:probe").options) - 1
    at.selectbox(key="setup:probe").set_value(folder).run()
    assert not [t for t in at.text_input if t.key == f"setup:probe:path:{folder}"]
    assert any("Typed paths are off on this server" in c for c in texts(at.caption))
    # with data roots: a choice among their folders, not a text box
    (tmp_path / "photos" / "dogs").mkdir(parents=True)
    monkeypatch.setenv("FALCON_DATA_ROOTS", str(tmp_path))
    at = run("pages/setup.py")
    at.selectbox(key="setup:probe").set_value(folder).run()
    no_traceback(at)
    picker = at.selectbox(key=f"setup:probe:path:{folder}")
    # shown by their place under the root, not by their server path
    assert f"{tmp_path.name}/photos" in picker.options
    assert f"{tmp_path.name}/photos/dogs" in picker.options
    assert not any(str(o).startswith("/") for o in picker.options)
    picker.set_value(str(tmp_path / "photos")).run()
    no_traceback(at)
    assert not any("give a path" in c for c in texts(at.caption))
    monkeypatch.setenv("FALCON_ALLOW_PATHS", "1")
    at = run("pages/setup.py")
    at.selectbox(key="setup:probe").set_value(folder).run()
    assert at.text_input(key=f"setup:probe:path:{folder}") is not None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("app-tiny"))


def test_a_typed_workspace_is_linked_by_an_opaque_id(tiny, monkeypatch, tmp_path):
    """Typed on the Setup page (allowed here): the link carries an id, never the paths; the id
    reopens the workspace on this server only."""
    monkeypatch.setenv("FALCON_ALLOW_PATHS", "1")
    at = run("pages/setup.py")
    choose = {"backbone": len(at.selectbox(key="setup:backbone").options) - 1,
              "clip": len(at.selectbox(key="setup:clip").options) - 1,
              "probe": len(at.selectbox(key="setup:probe").options) - 1, "vocabulary": 1}
    for group, i in choose.items():
        at.selectbox(key=f"setup:{group}").set_value(i).run()
    at.text_input(key="setup:backbone:backbone").set_value("timm:resnet18")  # typed, not a preset
    at.text_input(key="setup:backbone:weights").set_value(str(tiny["backbone"]))
    at.text_input(key="setup:clip:clip").set_value(str(tiny["clip_config"]))
    at.text_input(key="setup:clip:clip_pretrained").set_value(str(tiny["clip_ckpt"]))
    at.text_input(key=f"setup:probe:path:{choose['probe']}").set_value(str(tiny["images"]))
    at.text_input(key="setup:vocabulary:path:1").set_value(str(tiny["captions"]))
    at.run()
    at.button(key="setup_open").click().run()
    no_traceback(at)
    assert not on_the_demo_world(at)
    params = {k: at.query_params.get(k) for k in at.query_params}
    assert set(params) == {"ws"}, params
    wid = params["ws"]
    assert str(tiny["base"]) not in str(params)
    # the link reopens it (another session of this server) ...
    monkeypatch.delenv("FALCON_ALLOW_PATHS")
    again = run(params={"ws": wid})
    no_traceback(again)
    assert not on_the_demo_world(again)
    assert "images" in " ".join(texts(again.sidebar.caption))
    assert str(tiny["base"]) not in " ".join(texts(again.sidebar.caption))  # names, not paths
    # ... and means nothing on a server that does not know it
    monkeypatch.setenv("FALCON_CACHE", str(tmp_path / "another-server"))
    elsewhere = run(params={"ws": wid, "feature": "3"})
    no_traceback(elsewhere)
    assert on_the_demo_world(elsewhere)
    assert any(f"does not know the workspace {wid}" in w for w in texts(elsewhere.warning))


KEYS = st.sampled_from(["vocabulary", "probe", "weights", "backbone", "clip", "world", "seed",
                        "probe_size", "beta", "top_k", "feature", "features", "concept", "ws",
                        "low_threshold", "high_rule", "layer"])
VALUES = st.one_of(st.sampled_from(["/", SYSTEM_FILE, "nan", "-1", "1e9", "99999999999", "",
                                    "laion:/", "../..", "x" * 3000, "3,9,3", "topk"]),
                   st.text(max_size=20))


@hsettings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=st.dictionaries(KEYS, VALUES, min_size=1, max_size=4))
def test_fuzz_links_never_give_a_traceback_in_the_app(params):
    at = run(params=params)
    no_traceback(at)
    # a server path, or anything but "demo", for the probe set or the vocabulary: refused
    if set(params) & {"probe", "vocabulary", "weights"} and \
            not set(params) & {"backbone", "clip", "world", "seed", "probe_size", "layer"}:
        assert on_the_demo_world(at) or params.get("probe") == "demo" or \
            params.get("vocabulary") == "demo"


def test_a_cache_folder_that_is_a_file_gets_a_message_not_a_traceback(monkeypatch, tmp_path):
    root = tmp_path / "cache-file"
    root.write_text("not a folder")
    monkeypatch.setenv("FALCON_CACHE", str(root))
    at = run()
    no_traceback(at)
    assert any(f"The cache folder {root} is a file, not a folder" in e for e in texts(at.error))
    assert any("FALCON_CACHE" in i for i in texts(at.info))
    assert not at.expander or all("bug report" not in str(x.label) for x in at.expander)
