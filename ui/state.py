"""What the app is looking at, kept in ``st.session_state`` and mirrored in the URL.

The URL (``st.query_params``) holds:

* the workspace fields that differ from the demo default (``backbone=resnet18&probe=cifar10``),
* the method settings that differ from the authors' defaults (``beta=0.25&max_low_images=5``),
* the current page's selection (``feature=7``, ``features=3,9``, ``image=12``, ``word=dog``...).

so a link reopens the same view. The pure functions (:func:`encode`, :func:`decode` and the
parsers) are tested alone; :func:`begin_run` / :func:`end_run` are the Streamlit glue that
``app.py`` calls around each page.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from falcon_core.errors import FalconError
from falcon_core.settings import FalconSettings
from falcon_core.workspace import WorkspaceConfig

# Selection parameters a page may put in the URL, and their types.
SELECTION_KEYS: dict[str, str] = {
    "feature": "int",  # feature explorer, spurious concepts
    "features": "ints",  # pairs and groups: "3,9"
    "group": "int",  # pairs and groups: a discovered group (its rank)
    "concept": "str",  # feature explorer: the clicked concept
    "image": "int",  # failures: a probe image index
    "word": "str",  # concept search
}

WORKSPACE_FIELDS = tuple(f.name for f in dataclasses.fields(WorkspaceConfig))
SETTINGS_FIELDS = {f.name: f for f in dataclasses.fields(FalconSettings)}
_DEFAULT_WORKSPACE = WorkspaceConfig.demo()
_DEFAULT_SETTINGS = FalconSettings()

MAX_GROUP = 8  # the most features a pair/group selection may hold


# ------------------------------------------------------------------------------------ parsing

def parse_int(value: Any, name: str = "value") -> int:
    """A whole number from the URL or a text box; a FalconError says what was wrong."""
    if isinstance(value, bool):
        raise FalconError(f"{name} must be a whole number, not {value!r}.")
    if isinstance(value, int):
        return value
    text = str(value).strip()
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
        items = [p for p in str(value).replace(";", ",").replace(" ", ",").split(",") if p]
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
    try:
        x = float(str(value).strip())
    except ValueError as e:
        raise FalconError(f"{name} must be a number, not {value!r}.") from e
    if x != x or x in (float("inf"), float("-inf")):
        raise FalconError(f"{name} must be a finite number, not {value!r}.")
    return x


def parse_setting(name: str, value: Any) -> Any:
    """One setting from its URL text, typed like the FalconSettings field."""
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
        except Exception:  # noqa: BLE001
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


def encode(workspace: WorkspaceConfig | Mapping[str, Any] | None = None,
           settings: FalconSettings | Mapping[str, Any] | None = None,
           selection: Mapping[str, Any] | None = None,
           keys: Iterable[str] = ()) -> dict[str, str]:
    """The query parameters of a view: non-default workspace fields and settings, and the
    selection entries named in ``keys`` (the current page's)."""
    params: dict[str, str] = {}
    ws = None
    if workspace is not None:
        ws = workspace if isinstance(workspace, WorkspaceConfig) else workspace_from(workspace)
        for k in WORKSPACE_FIELDS:
            v = getattr(ws, k)
            if v != getattr(_DEFAULT_WORKSPACE, k):
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


def decode(params: Mapping[str, Any]) -> Decoded:
    """Split query parameters into workspace changes, setting overrides and a selection.

    Nothing raises: what cannot be read is reported in ``problems`` and left out.
    """
    out = Decoded()
    for k, raw in params.items():
        value = raw[-1] if isinstance(raw, (list, tuple)) and raw else raw
        try:
            if k in WORKSPACE_FIELDS:
                if k in ("seed", "probe_size"):
                    out.workspace[k] = parse_int(value, k)
                else:
                    text = str(value).strip()
                    out.workspace[k] = None if text in ("", "None") else text
            elif k in SETTINGS_FIELDS:
                out.settings[k] = parse_setting(k, value)
            elif k in SELECTION_KEYS:
                kind = SELECTION_KEYS[k]
                if kind == "int":
                    out.selection[k] = parse_int(value, k)
                elif kind == "ints":
                    out.selection[k] = parse_ints(value, k)[:MAX_GROUP]
                else:
                    text = str(value).strip()
                    if text:
                        out.selection[k] = text
            # anything else (e.g. a tracking parameter) is ignored
        except FalconError as e:
            out.problems.append(f"Ignored '{k}={value}' in the link: {e.message}")
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
    try:
        current = {k: st.query_params.get(k) for k in st.query_params.keys()}
    except Exception:  # pragma: no cover - no query params in this context
        current = {}
    last = ss["_url_last"]
    external = {k: v for k, v in current.items() if last.get(k) != v}
    if not external:
        return
    dec = decode(external)
    ss["_url_problems"] = dec.problems
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
    params = encode(ss.get("workspace"), settings, ss.get("sel"), ss.get("_url_keys", []))
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


def seed_widget(key: str, value: Any) -> None:
    """Give a widget its starting value through the session state (once)."""
    ss = _ss()
    if key not in ss:
        ss[key] = value
