"""What a link may choose: among the workspaces this server allows, never a path of its choice.

The app is served to other people, so a link (the URL's query parameters) is untrusted input. Its
workspace fields may select only:

* the presets the Setup page offers (``backbone=resnet18``, ``weights=imagenet``,
  ``probe=cifar10``, the demo world, its two shipped world configs ``world=default|alt``, ...);
* files and folders under the data roots the operator lists in ``FALCON_DATA_ROOTS``
  (folders separated by ``:``; none by default), resolved with symlinks followed, so nothing
  outside them is reachable;
* a workspace chosen on this server's Setup page, named by an opaque id (``ws=3f9c0d1e2a4b5c6d``):
  an HMAC of the workspace under a secret of this server, kept in the cache folder
  (``<cache>/workspaces/``). The id means nothing elsewhere: on another server (or after its list
  was deleted) it is refused with a message and the demo world is shown.

Every number in a link is bounded (:data:`WORKSPACE_INT_BOUNDS`, :data:`SELECTION_INT_BOUNDS`, the
settings' own table :data:`falcon_core.settings.LIMITS`); every text has a length limit. Whatever
is refused raises :class:`LinkError` (a :class:`~falcon_core.errors.FalconError`), which the
decoder turns into an "Ignored ... in the link" notice.

Typed paths on the Setup page are allowed only when the operator says so
(``FALCON_ALLOW_PATHS=1``, for a server no one else can reach). Off by default: Streamlit listens on
every address unless told otherwise, and even one bound to localhost may sit behind a reverse proxy
that serves it to others, so the server cannot tell on its own.

Nothing here imports streamlit (the tests call it directly).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from falcon_core.cache import DiskCache, canonical_json
from falcon_core.errors import FalconError
from falcon_core.workspace import WorkspaceConfig

from . import presets

DATA_ROOTS_ENV = "FALCON_DATA_ROOTS"
ALLOW_PATHS_ENV = "FALCON_ALLOW_PATHS"
REGISTRY_NAMESPACE = "workspaces"

#: The longest text a link value may hold (characters).
MAX_TEXT = 2000
#: Demo-world numbers a link may set: (lowest, highest).
WORKSPACE_INT_BOUNDS: dict[str, tuple[int, int]] = {"seed": (0, 2**31 - 1),
                                                   "probe_size": (100, 20000)}
#: Selection numbers (checked again against the open workspace: its features and images).
SELECTION_INT_BOUNDS: dict[str, tuple[int, int]] = {"feature": (0, 1 << 20),
                                                    "features": (0, 1 << 20),
                                                    "group": (0, 100000),
                                                    "image": (0, 1 << 31)}
MAX_WORDS = 200  # characters of a searched word or a clicked concept

_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_LAYER_RE = re.compile(r"^[A-Za-z0-9_.\[\]-]{1,120}(:input)?$")
_SUFFIXES = {
    "weights": (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".tar"),
    "clip_pretrained": (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"),
    "vocabulary": (".txt", ".csv", ".tsv", ".parquet"),
    "class_names": (".txt",),
    "world": (".json",),
    "clip": (".json",),
}
#: Fields whose values may be a path (a file, or a folder for the probe set / LAION shards).
PATH_FIELDS = ("weights", "clip", "clip_pretrained", "probe", "vocabulary", "world",
               "class_names")
#: What the Setup page takes as typed when the operator allows it: paths and model names.
TYPED_FIELDS = PATH_FIELDS + ("backbone",)


class LinkError(FalconError):
    """A value in a link that this server does not accept."""


def _preset_values(name: str) -> set[Any]:
    vals: set[Any] = set()
    for plist in presets.GROUPS.values():
        for p in plist:
            if name in p.fields:
                vals.add(p.fields[name])
    return vals


#: The values a link may give each workspace field without naming a path.
CHOICES: dict[str, set[Any]] = {
    "backbone": _preset_values("backbone"),
    "weights": _preset_values("weights") | {None, "random"},
    "clip": _preset_values("clip"),
    "clip_pretrained": _preset_values("clip_pretrained") | {None},
    "probe": _preset_values("probe") | {"demo"},
    "vocabulary": _preset_values("vocabulary") | {"demo"},
    "world": {None, "default", "alt"},
    "token_pool": {"cls", "mean"},
}


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(WorkspaceConfig)}


def _show(values: Iterable[Any]) -> str:
    return ", ".join(sorted(str(v) for v in values if v is not None))


# ------------------------------------------------------------------------------------ policy

def data_roots(env: Mapping[str, str] | None = None) -> list[Path]:
    """The folders a link (and the Setup page) may choose files and folders under."""
    env = os.environ if env is None else env
    out = []
    for part in str(env.get(DATA_ROOTS_ENV, "") or "").split(os.pathsep):
        part = part.strip()
        if part:
            p = Path(os.path.realpath(os.path.expanduser(part)))
            if p.is_dir() and p not in out and p != Path(p.anchor):
                out.append(p)
    return out


def paths_allowed(env: Mapping[str, str] | None = None) -> bool:
    """Whether the Setup page takes typed paths: only with ``FALCON_ALLOW_PATHS=1`` (see the
    module docstring for why it is off by default)."""
    env = os.environ if env is None else env
    return str(env.get(ALLOW_PATHS_ENV, "") or "").strip().lower() in ("1", "true", "yes", "on")


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    for r in roots:
        try:
            if os.path.commonpath([str(path), str(r)]) == str(r):
                return True
        except ValueError:
            continue
    return False


# ----------------------------------------------------------------------------------- registry

class WorkspaceRegistry:
    """Workspaces chosen on this server, by opaque id (see the module docstring).

    Kept through the disk cache (checksummed, schema-checked on read); when the cache folder
    cannot be written they live in memory, and links to them work until the server restarts."""

    def __init__(self, cache: DiskCache):
        self.cache = cache
        self._secret: Optional[bytes] = None

    def _key(self) -> bytes:
        if self._secret is None:
            got = self.cache.read_bytes(REGISTRY_NAMESPACE, "secret")
            if got is None or len(got) != 32:
                got = secrets.token_bytes(32)
                self.cache.write_bytes(REGISTRY_NAMESPACE, "secret", got)
            self._secret = got
        return self._secret

    def id_for(self, config: WorkspaceConfig) -> str:
        text = canonical_json(config.to_dict()).encode("utf-8")
        return hmac.new(self._key(), text, hashlib.sha256).hexdigest()[:16]

    def register(self, config: WorkspaceConfig) -> str:
        """The id of ``config`` on this server (stored, so a link with it reopens it)."""
        wid = self.id_for(config)
        if self.lookup(wid) != config:
            self.cache.write_json(REGISTRY_NAMESPACE, wid, config.to_dict())
        return wid

    def lookup(self, wid: str) -> Optional[WorkspaceConfig]:
        if not _ID_RE.match(str(wid)):
            return None
        return self.cache.read_json(REGISTRY_NAMESPACE, wid, schema=_workspace_schema)

    def resolve(self, wid: str) -> WorkspaceConfig:
        text = str(wid).strip()
        if not _ID_RE.match(text):
            raise LinkError(f"'{text[:40]}' is not a workspace id (16 hexadecimal characters).")
        config = self.lookup(text)
        if config is None or self.id_for(config) != text:
            raise LinkError(
                f"this server does not know the workspace {text}: the link was made on another "
                "server, or its list of workspaces was deleted.",
                "Open the Setup page to choose the models and data (the demo world is shown).")
        return config


def _workspace_schema(value: Any) -> WorkspaceConfig:
    if not isinstance(value, dict):
        raise TypeError("a workspace is an object")
    fields = {f.name: f for f in dataclasses.fields(WorkspaceConfig)}
    if set(value) != set(fields):
        raise ValueError("not the fields of a workspace")
    for k, v in value.items():
        if k in WORKSPACE_INT_BOUNDS:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{k} is not a whole number")
        elif v is not None and not isinstance(v, str):
            raise TypeError(f"{k} is not text")
    return WorkspaceConfig(**value)


# ------------------------------------------------------------------------------- the policy

@dataclass
class LinkPolicy:
    """What this server lets a link choose (see the module docstring)."""

    roots: list[Path] = field(default_factory=list)
    registry: Optional[WorkspaceRegistry] = None
    allow_paths: bool = False  # the Setup page takes typed paths

    @classmethod
    def from_env(cls, cache_root: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None) -> "LinkPolicy":
        cache = DiskCache(cache_root or None)
        return cls(roots=data_roots(env), registry=WorkspaceRegistry(cache),
                   allow_paths=paths_allowed(env))

    # ---- one workspace field -------------------------------------------------------------
    def check_field(self, name: str, value: Any) -> Any:
        """``value`` (normalised) if a link may give it to workspace field ``name``; else
        :class:`LinkError`."""
        if name in WORKSPACE_INT_BOUNDS:
            lo, hi = WORKSPACE_INT_BOUNDS[name]
            v = _whole(value, name)
            if not lo <= v <= hi:
                raise LinkError(f"{name} must be between {lo} and {hi}.")
            return v
        text = None if value is None else str(value)
        if text is not None:
            if len(text) > MAX_TEXT:
                raise LinkError(f"{name} is longer than {MAX_TEXT} characters.")
            if any(ord(c) < 32 for c in text):
                raise LinkError(f"{name} has control characters.")
            text = text.strip()
            if text in ("", "None"):
                text = None
        if text is None and _DEFAULTS.get(name, "") is None:  # "not set": the preset default
            return None
        if name == "layer":
            if text is not None and not _LAYER_RE.match(text):
                raise LinkError("layer must be a module name such as layer4 or blocks.11.norm1.")
            return text
        if name in CHOICES and text in CHOICES[name]:
            return text
        if name == "world" and text is not None:
            return self._path(name, text, files=True)
        if name == "class_names" and text is not None:
            if not _looks_like_path(text):
                names = [n for n in text.split(",") if n.strip()]
                if len(names) > 100000:
                    raise LinkError("class_names holds too many names.")
                return text
            return self._path(name, text, files=True)
        if name in PATH_FIELDS and text is not None:
            if name == "vocabulary" and text.lower().startswith("laion:"):
                return "laion:" + self._path(name, text[len("laion:"):], files=False)
            if name == "probe":
                body = text[len("folder:"):] if text.startswith("folder:") else text
                return self._path(name, body, files=False)
            if name == "vocabulary":
                return self._path(name, text, files=None)
            return self._path(name, text, files=True)
        if name in CHOICES:
            extra = " (other models are chosen on the Setup page)" \
                if name in ("backbone", "clip") else ""
            raise LinkError(f"{name} must be one of {_show(CHOICES[name])}{extra}.")
        raise LinkError(f"{name} cannot be set in a link.")

    def _path(self, name: str, text: str, files: Optional[bool]) -> str:
        """A file (``files``), folder (not ``files``) or either (None) under the data roots."""
        refusal = (f"a link cannot name files or folders of this server; it chooses among the "
                   f"presets ({_show(CHOICES.get(name, ())) or 'none for this field'})"
                   + (" and what is under the data folders this server allows"
                      if self.roots else "") + ".")
        hint = ("Choose the models and data on the Setup page." if self.roots else
                f"The operator can allow folders with {DATA_ROOTS_ENV} (see the README).")
        if not self.roots:
            raise LinkError(refusal, hint)
        try:
            real = Path(os.path.realpath(os.path.expanduser(text)))
        except (OSError, ValueError) as e:
            raise LinkError(refusal, hint) from e
        if not _inside(real, self.roots):
            raise LinkError(refusal, hint)
        if not real.exists():
            raise LinkError(f"{name}: nothing is at that place under the data folders.",
                            "Check the link, or choose on the Setup page.")
        if files is True and not real.is_file() or files is False and not real.is_dir():
            raise LinkError(f"{name} must be a {'file' if files else 'folder'}.")
        return str(real)

    # ---- whole workspaces ----------------------------------------------------------------
    def is_choice(self, name: str, value: Any) -> bool:
        """Whether a link can carry this field's value as it is (not a path)."""
        if name in WORKSPACE_INT_BOUNDS or name in ("layer", "token_pool"):
            return True
        if name == "class_names":
            return value is None or not _looks_like_path(str(value))
        if name == "world" and value is not None:
            return value in ("default", "alt")
        return value in CHOICES.get(name, {None})

    def needs_id(self, config: WorkspaceConfig) -> bool:
        """True when the workspace names a path: its link then carries an opaque id."""
        return any(not self.is_choice(k, v) for k, v in config.to_dict().items())

    def workspace_id(self, config: WorkspaceConfig) -> Optional[str]:
        if self.registry is None:
            return None
        return self.registry.register(config)

    def resolve(self, wid: str) -> WorkspaceConfig:
        if self.registry is None:
            raise LinkError("this server keeps no list of workspaces.")
        return self.registry.resolve(wid)

    # ---- the Setup page ------------------------------------------------------------------
    def candidates(self, name: str, limit: int = 500, depth: int = 3) -> list[str]:
        """Files or folders under the data roots that field ``name`` may use (for a picker
        when typed paths are off). At most ``limit``, ``depth`` levels down."""
        want_dirs = name in ("probe", "laion")
        suffixes = _SUFFIXES.get(name, ())
        out: list[str] = []
        for root in self.roots:
            for dirpath, dirs, files in os.walk(root):
                rel_depth = len(Path(dirpath).relative_to(root).parts)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                if rel_depth >= depth:
                    dirs[:] = []
                if want_dirs:
                    if rel_depth > 0 or dirpath == str(root):
                        out.append(dirpath)
                else:
                    out += [os.path.join(dirpath, f) for f in sorted(files)
                            if not f.startswith(".") and (not suffixes or
                                                          f.lower().endswith(suffixes))]
                if len(out) >= limit:
                    return out[:limit]
        return out


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise LinkError(f"{name} must be a whole number.")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if len(text) > 20 or not re.fullmatch(r"[+-]?\d+", text):
        raise LinkError(f"{name} must be a whole number.")
    return int(text)


def _looks_like_path(text: str) -> bool:
    return ("/" in text or "\\" in text or text.startswith(("~", ".")) or
            os.path.exists(os.path.expanduser(text)))
