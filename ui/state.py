"""What the app is looking at, kept in ``st.session_state`` and mirrored in the URL.

The URL (``st.query_params``) holds:

* the workspace fields that differ from the demo default (``backbone=resnet18&probe=cifar10``),
  or, for a workspace that names a file or folder of the server, its opaque id (``ws=...``):
  a link carries choices, never a server path (what a link may choose: :mod:`ui.links`);
* the method settings that differ from the authors' defaults (``beta=0.25&max_low_images=5``),
* the current page's selection (``feature=7``, ``features=3,9``, ``image=12``, ``word=dog``...).

so a link reopens the same view. A link is untrusted input: every value is checked and bounded
(workspace fields by :class:`ui.links.LinkPolicy`, settings by the settings' own table
:data:`falcon_core.settings.LIMITS`, the selection by :data:`ui.links.SELECTION_INT_BOUNDS`), and
anything refused is left out with an "Ignored ... in the link" notice; nothing in a link can
raise. The pure functions (:func:`encode`, :func:`decode` and the parsers) are tested alone;
:func:`begin_run` / :func:`end_run` are the Streamlit glue that ``app.py`` calls around each page.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from falcon_core.errors import FalconError
from falcon_core.settings import FalconSettings, check_setting
from falcon_core.workspace import WorkspaceConfig

from . import links

# Selection parameters a page may put in the URL, and their types.
SELECTION_KEYS: dict[str, str] = {
    "feature": "int",  # feature explorer, spurious concepts
    "features": "ints",  # pairs and groups: "3,9"
    "group": "int",  # pairs and groups: a discovered group (its rank)
    "concept": "str",  # feature explorer: the clicked concept
    "image": "int",  # failures: a probe image index
    "word": "str",  # concept search
    "model_b": "str",  # compare models: a registered backbone name (checked by ui/compare.py)
}

WORKSPACE_FIELDS = tuple(f.name for f in dataclasses.fields(WorkspaceConfig))
SETTINGS_FIELDS = {f.name: f for f in dataclasses.fields(FalconSettings)}
_DEFAULT_WORKSPACE = WorkspaceConfig.demo()
_DEFAULT_SETTINGS = FalconSettings()

MAX_GROUP = 8  # the most features a pair/group selection may hold
WORKSPACE_ID_KEY = "ws"  # the opaque id of a workspace that names server paths


# ------------------------------------------------------------------------------------ parsing

def parse_int(value: Any, name: str = "value") -> int:
    """A whole number from the URL or a text box; a FalconError says what was wrong."""
    if isinstance(value, bool):
        raise FalconError(f"{name} must be a whole number, not {value!r}.")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if len(text) > 40:
        raise FalconError(f"{name} must be a whole number of at most 40 characters.")
    try:
        return int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            as_float = None
        if as_float is not None and as_float.is_integer():
            return int(as_float)
    raise FalconError(f"{name} must be a whole number, not {value!r}.",
                      f"Give {name} as a number such as 0, 7 or 42.")


def parse_ints(value: Any, name: str = "features") -> list[int]:
    """``"3,9"`` / ``"3 9"`` / ``[3, 9]`` -> ``[3, 9]`` (order kept, duplicates dropped)."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        text = str(value)
        if len(text) > links.MAX_TEXT:
            raise FalconError(f"{name} is longer than {links.MAX_TEXT} characters.")
        items = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    out: list[int] = []
    for item in items:
        f = parse_int(item, name)
        if f not in out:
            out.append(f)
    if not out:
        raise FalconError(f"No {name} given.", "Give at least one feature number, e.g. 3,9.")
    return out


def format_ints(values: Iterable[int]) -> str:
    return ",".join(str(int(v)) for v in values)


def _parse_bool(value: Any, name: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise FalconError(f"{name} must be true or false, not {value!r}.")


def _parse_float(value: Any, name: str) -> float:
    text = str(value).strip()
    if len(text) > 40:
        raise FalconError(f"{name} must be a number of at most 40 characters.")
    try:
        x = float(text)
    except ValueError as e:
        raise FalconError(f"{name} must be a number, not {value!r}.") from e
    if x != x or x in (float("inf"), float("-inf")):
        raise FalconError(f"{name} must be a finite number, not {value!r}.")
    return x


def parse_setting(name: str, value: Any) -> Any:
    """One setting from its URL text, typed like the FalconSettings field (its range is checked
    by :func:`falcon_core.settings.check_setting`)."""
    if name not in SETTINGS_FIELDS:
        raise FalconError(f"Unknown setting {name!r}.")
    default = getattr(_DEFAULT_SETTINGS, name)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "default")):
        if name == "low_threshold":
            return None
        return default
    if isinstance(default, bool):
        return _parse_bool(value, name)
    if isinstance(default, int):
        return parse_int(value, name)
    if isinstance(default, float) or name == "low_threshold":
        return _parse_float(value, name)
    return str(value)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6)).rstrip("0").rstrip(".") if "e" not in repr(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return format_ints(value)
    return str(value)


# ------------------------------------------------------------------------- workspace/settings

def workspace_from(data: Mapping[str, Any] | None) -> WorkspaceConfig:
    return WorkspaceConfig.from_dict(dict(data or {})) if data else WorkspaceConfig.demo()


def base_settings(workspace: WorkspaceConfig | Mapping[str, Any] | None = None) -> FalconSettings:
    """A workspace's default settings (the authors', except where the workspace says otherwise,
    e.g. the demo backbone's top-k rule)."""
    if workspace is not None and not isinstance(workspace, WorkspaceConfig):
        try:
            workspace = workspace_from(workspace)
        except (FalconError, TypeError):
            workspace = None
    fn = getattr(workspace, "default_settings", None)
    if fn is not None:
        try:
            return fn()
        except FalconError:  # a preset's settings out of range: the authors' instead
            pass
    return _DEFAULT_SETTINGS


def settings_from(overrides: Mapping[str, Any] | None,
                  base: FalconSettings | None = None) -> FalconSettings:
    """``base`` (the authors' defaults) + ``overrides`` (raises FalconError when out of range)."""
    base = base or _DEFAULT_SETTINGS
    return base.replace(**dict(overrides or {})) if overrides else base


def settings_overrides(settings: FalconSettings,
                       base: FalconSettings | None = None) -> dict[str, Any]:
    """Only the settings that differ from ``base`` (the authors' defaults)."""
    base = base or _DEFAULT_SETTINGS
    return {k: v for k, v in settings.to_dict().items() if getattr(base, k) != v}


def config_key(config: WorkspaceConfig) -> tuple:
    """A hashable key of a workspace (for st.cache_resource / st.cache_data)."""
    return tuple(sorted((k, v) for k, v in config.to_dict().items()))


def settings_key(settings: FalconSettings) -> tuple:
    return tuple(sorted(settings.to_dict().items()))


# ------------------------------------------------------------------------------- URL <-> state

@dataclass
class Decoded:
    workspace: dict[str, Any] = field(default_factory=dict)  # workspace fields to change
    settings: dict[str, Any] = field(default_factory=dict)  # setting overrides to set
    selection: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what in the URL was not understood


def default_policy() -> "links.LinkPolicy":
    """What a link may choose on this server (data roots, the workspace registry in the cache
    folder). The Streamlit glue adds whether typed paths are allowed (:func:`policy`)."""
    import os

    return links.LinkPolicy.from_env(os.environ.get("FALCON_CACHE") or None)


def encode(workspace: WorkspaceConfig | Mapping[str, Any] | None = None,
           settings: FalconSettings | Mapping[str, Any] | None = None,
           selection: Mapping[str, Any] | None = None,
           keys: Iterable[str] = (),
           policy: "links.LinkPolicy | None" = None) -> dict[str, str]:
    """The query parameters of a view: non-default workspace fields (or, when the workspace names
    a path, its opaque id ``ws``), non-default settings, and the selection entries named in
    ``keys`` (the current page's)."""
    params: dict[str, str] = {}
    ws = None
    if workspace is not None:
        ws = workspace if isinstance(workspace, WorkspaceConfig) else workspace_from(workspace)
        policy = policy or default_policy()
        wid = policy.workspace_id(ws) if policy.needs_id(ws) else None
        if wid is not None:
            params[WORKSPACE_ID_KEY] = wid
        else:
            for k in WORKSPACE_FIELDS:
                v = getattr(ws, k)
                if v != getattr(_DEFAULT_WORKSPACE, k) and policy.is_choice(k, v):
                    params[k] = "" if v is None else format_value(v)
    if settings is not None:
        base = base_settings(ws)
        s = settings if isinstance(settings, FalconSettings) else settings_from(settings, base)
        for k, v in settings_overrides(s, base).items():
            params[k] = "default" if v is None else format_value(v)
    selection = selection or {}
    for k in keys:
        if k in SELECTION_KEYS and selection.get(k) not in (None, "", []):
            params[k] = format_value(selection[k])
    return params


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _selection_value(k: str, value: Any, problems: list[str]) -> Any:
    kind = SELECTION_KEYS[k]
    lo, hi = links.SELECTION_INT_BOUNDS.get(k, (0, 0))
    if kind == "int":
        v = parse_int(value, k)
        if not lo <= v <= hi:
            raise FalconError(f"{k} must be between {lo} and {hi}.")
        return v
    if kind == "ints":
        vs = parse_ints(value, k)
        bad = [v for v in vs if not lo <= v <= hi]
        if bad:
            raise FalconError(f"{k} must be between {lo} and {hi} (not {bad[0]}).")
        if len(vs) > MAX_GROUP:
            problems.append(f"Ignored the features after the first {MAX_GROUP} in "
                            f"'{k}={_shown(value)}' in the link: a group holds at most "
                            f"{MAX_GROUP}.")
        return vs[:MAX_GROUP]
    text = str(value).strip()
    if len(text) > links.MAX_WORDS:
        raise FalconError(f"{k} must be at most {links.MAX_WORDS} characters.")
    if any(ord(c) < 32 for c in text):
        raise FalconError(f"{k} has control characters.")
    return text or None


def decode(params: Mapping[str, Any], policy: "links.LinkPolicy | None" = None) -> Decoded:
    """Split query parameters into workspace changes, setting overrides and a selection.

    Nothing raises: what cannot be read, or is not allowed on this server, or is out of its
    bounds, is reported in ``problems`` ("Ignored ... in the link: why") and left out.
    """
    out = Decoded()
    policy = policy or default_policy()
    items = []
    for k, raw in dict(params).items():
        value = raw[-1] if isinstance(raw, (list, tuple)) and raw else raw
        items.append((str(k), value))
    items.sort(key=lambda kv: kv[0] != WORKSPACE_ID_KEY)  # the id first: fields refine it
    for k, value in items:
        try:
            if k == WORKSPACE_ID_KEY:
                out.workspace.update(policy.resolve(value).to_dict())
            elif k in WORKSPACE_FIELDS:
                out.workspace[k] = policy.check_field(k, value)
            elif k in SETTINGS_FIELDS:
                out.settings[k] = check_setting(k, parse_setting(k, value))
            elif k in SELECTION_KEYS:
                v = _selection_value(k, value, out.problems)
                if v is not None:
                    out.selection[k] = v
            # anything else (e.g. a tracking parameter) is ignored
        except FalconError as e:
            out.problems.append(f"Ignored '{k}={_shown(value)}' in the link: {e.message}"
                                + (f" {e.hint}" if isinstance(e, links.LinkError) and e.hint
                                   else ""))
    if out.settings:
        try:
            settings_from(out.settings)
        except FalconError as e:
            out.problems.append(f"Ignored the settings in the link: {e.message}")
            out.settings = {}
    if out.workspace:
        try:
            WorkspaceConfig.demo().replace(**out.workspace)
        except (FalconError, TypeError) as e:
            out.problems.append(f"Ignored the workspace in the link: {e}")
            out.workspace = {}
    return out


# -------------------------------------------------------------------------- Streamlit glue

def _ss():
    import streamlit as st

    return st.session_state


def widget_key(name: str, suffix: str = "") -> str:
    """Widgets bound to a URL parameter use ``w:<name>...`` keys (reset when the URL changes)."""
    return f"w:{name}{':' + suffix if suffix else ''}"


def begin_run() -> None:
    """Call at the top of each run: apply URL parameters that changed outside the app (a pasted
    link, the first load) to the session state."""
    import streamlit as st

    ss = st.session_state
    ss.setdefault("workspace", WorkspaceConfig.demo().to_dict())
    ss.setdefault("settings", {})
    ss.setdefault("sel", {})
    ss.setdefault("_url_last", {})
    ss["_url_keys"] = []
    ss["_url_problems"] = []
    ss["_url_fresh"] = {}
    try:
        current = {k: st.query_params.get(k) for k in st.query_params.keys()}
    except Exception:  # pragma: no cover - no query params in this context
        current = {}
    last = ss["_url_last"]
    external = {k: v for k, v in current.items() if last.get(k) != v}
    if not external:
        return
    dec = decode(external, policy())
    ss["_url_problems"] = dec.problems
    ss["_url_fresh"] = dict(dec.selection)  # checked against the workspace by the page
    if dec.workspace:
        ws = dict(ss["workspace"])
        ws.update(dec.workspace)
        ss["workspace"] = ws
    if dec.settings:
        st_over = dict(ss["settings"])
        st_over.update(dec.settings)
        ss["settings"] = st_over
    if dec.selection:
        sel = dict(ss["sel"])
        sel.update(dec.selection)
        ss["sel"] = sel
    changed = set(dec.workspace) | set(dec.settings) | set(dec.selection)
    for key in list(ss.keys()):
        if isinstance(key, str) and key.startswith("w:") and key[2:].split(":")[0] in changed:
            del ss[key]


def end_run() -> None:
    """Call at the end of each run: write the current view into the URL."""
    import streamlit as st

    ss = st.session_state
    base = base_settings(ss.get("workspace"))
    try:
        settings = settings_from(ss.get("settings"), base)
    except FalconError:
        settings = base
    params = encode(ss.get("workspace"), settings, ss.get("sel"), ss.get("_url_keys", []),
                    policy=policy())
    current = {k: st.query_params.get(k) for k in st.query_params.keys()}
    if current != params:
        st.query_params.from_dict(params)
    ss["_url_last"] = params


def url_keys(*keys: str) -> None:
    """The current page's selection entries that belong in the URL."""
    ss = _ss()
    lst = ss.setdefault("_url_keys", [])
    for k in keys:
        if k not in lst:
            lst.append(k)


def url_problems() -> list[str]:
    return list(_ss().get("_url_problems", []))


def fresh_from_link() -> dict[str, Any]:
    """The selection entries a link set in this run (the page checks them against the open
    workspace: a feature or image it does not have)."""
    return dict(_ss().get("_url_fresh", {}))


def add_url_problem(text: str) -> None:
    _ss().setdefault("_url_problems", []).append(text)


_POLICIES: dict[tuple, "links.LinkPolicy"] = {}


def policy() -> "links.LinkPolicy":
    """This server's link policy: data roots (``FALCON_DATA_ROOTS``), the workspace registry in
    the cache folder, and whether the Setup page takes typed paths (``FALCON_ALLOW_PATHS=1``)."""
    import os

    key = (os.environ.get("FALCON_CACHE") or "", os.environ.get(links.DATA_ROOTS_ENV) or "",
           os.environ.get(links.ALLOW_PATHS_ENV) or "")
    if key not in _POLICIES:
        _POLICIES[key] = links.LinkPolicy.from_env(key[0] or None)
    return _POLICIES[key]


def workspace() -> WorkspaceConfig:
    """The current workspace (the demo world unless changed on the Setup page or in the URL)."""
    ss = _ss()
    try:
        return workspace_from(ss.get("workspace"))
    except (FalconError, TypeError):
        ss["workspace"] = WorkspaceConfig.demo().to_dict()
        return WorkspaceConfig.demo()


def set_workspace(config: WorkspaceConfig) -> None:
    ss = _ss()
    ss["workspace"] = config.to_dict()
    ss["sel"] = {}  # feature numbers of one model mean nothing for another
    for key in list(ss.keys()):
        if isinstance(key, str) and key.startswith("w:"):
            del ss[key]


def settings() -> FalconSettings:
    """The current settings: the workspace's defaults + what was changed (sliders, URL)."""
    ss = _ss()
    base = base_settings(workspace())
    try:
        return settings_from(ss.get("settings"), base)
    except FalconError:
        ss["settings"] = {}
        return base


def set_settings(new: FalconSettings) -> None:
    _ss()["settings"] = settings_overrides(new, base_settings(workspace()))


def get(name: str, default: Any = None) -> Any:
    """A selection entry (``feature``, ``features``, ``image``, ...)."""
    return _ss().setdefault("sel", {}).get(name, default)


def put(name: str, value: Any) -> None:
    sel = _ss().setdefault("sel", {})
    if value is None:
        sel.pop(name, None)
    else:
        sel[name] = value


def bounds(name: str) -> tuple[Any, Any]:
    """The range of setting ``name`` (from the settings' one table, ``LIMITS``), typed like the
    setting: what its slider or number box offers, and what a link may set."""
    from falcon_core.settings import LIMITS

    lim = LIMITS[name]
    default = SETTINGS_FIELDS[name].default
    if isinstance(default, int) and not isinstance(default, bool):
        return int(lim.lo), int(lim.hi)
    return float(lim.lo), float(lim.hi)


def clamp_widget(key: str, lo: Any, hi: Any) -> None:
    """Keep a slider's stored value inside its range (a range that moved since it was set)."""
    ss = _ss()
    if key in ss and isinstance(ss[key], (int, float)) and not isinstance(ss[key], bool):
        v = ss[key]
        if v != v or v < lo or v > hi:  # NaN, below or above
            ss[key] = type(v)(lo if v != v or v < lo else hi)


def seed_widget(key: str, value: Any) -> None:
    """Give a widget its starting value through the session state (once)."""
    ss = _ss()
    if key not in ss:
        ss[key] = value
