"""Named factories for FALCON's four inputs: backbones, CLIP models, probe sets, vocabularies.

Each kind has one :class:`Registry` (``models.backbones.BACKBONES``, ``models.clip.CLIP_MODELS``,
``data.probes.PROBES``, ``data.vocabulary.VOCABULARIES``); its ``create_*`` function looks a name
up there before trying anything else (a timm model, an open_clip model, a folder, a file). The
offline demo world is registered as ``"demo"`` in all four, like any other preset.

A factory is a callable, or ``"package.module:function"``, imported the first time it is used (so
the demo world, which needs scikit-learn and its models, costs nothing until it is chosen).
:meth:`Registry.create` calls it with the positional arguments given and with those of the
keyword options its signature names: a workspace passes every input the same options (the demo
world's ``world``, ``seed``, ``n``, ...) and each factory takes what it reads.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable


def accepted_options(factory: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``factory`` takes by name (all of them if it takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return dict(options)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(options)
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in options.items() if k in names}


class Registry:
    """Names -> factories of one kind of input, each with the settings it recommends."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable | str] = {}
        self._settings: dict[str, dict[str, Any]] = {}

    def register(self, name: str, factory: Callable | str,
                 settings: dict[str, Any] | None = None) -> None:
        """Add (or replace) ``name``. ``settings``: FalconSettings fields this input works best
        with (the workspace's defaults when it is chosen)."""
        self._factories[name] = factory
        self._settings[name] = dict(settings or {})

    def unregister(self, name: str) -> None:
        self._factories.pop(name, None)
        self._settings.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def names(self) -> list[str]:
        return list(self._factories)

    def settings(self, name: str) -> dict[str, Any]:
        """The settings ``name`` was registered with ({} for a name that is not registered)."""
        return dict(self._settings.get(name, {}))

    def factory(self, name: str) -> Callable:
        factory = self._factories[name]
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
            self._factories[name] = factory
        return factory

    def create(self, name: str, *args: Any, **options: Any) -> Any:
        """``factory(*args, **options it accepts)`` of the registered ``name``."""
        factory = self.factory(name)
        return factory(*args, **accepted_options(factory, options))
