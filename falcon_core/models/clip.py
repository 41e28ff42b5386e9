"""The vision-language model (CLIP) that puts words on crops.

``create_clip(ClipSpec("ViT-B-32", "openai"))`` goes through open_clip's own factory
(``open_clip.create_model_and_transforms`` and ``open_clip.get_tokenizer``), so every open_clip
model and pretrained tag works. ``pretrained`` is a tag (downloaded once by open_clip), a local
checkpoint file, or None (random weights: tests). A custom architecture is an open_clip config
file: a name ending in ``.json`` is registered with open_clip first (:func:`register_clip_config`).
Named presets are kept in a registry (:data:`CLIP_MODELS`): the offline demo world's CLIP is
``"demo"``.

Embeddings are float32, L2-normalised, computed in eval mode without gradients.

Text is embedded at the length it has (issue 9): captions are tokenized to the model's context
(77 tokens for CLIP), but a caption of 12 tokens does not need the other 65 positions. With a causal
text tower (CLIP's) the output at position p depends only on positions <= p, so the pooled token
(the end-of-text token: ``argmax`` / ``eos`` pooling, or the first) is the same when the padding
after the batch's longest caption is cut off. :meth:`ClipModel.encode_texts` therefore sorts the
captions by length, cuts each batch to its longest caption (:func:`encode_text_trimmed`) and puts
the rows back in order. Towers where this would change the result (no causal mask, a padding
mask, an appended class token as in CoCa, ``last`` pooling, or a tower open_clip builds another
way, e.g. Hugging Face text models) are run untrimmed; ``ClipModel.text_trim`` says which, and
why (:func:`text_trim_support`).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from falcon_core.errors import OFFLINE_HINT, FalconError, OfflineError
from falcon_core.cache import file_digest
from falcon_core.models.backbones import hub_offline_guard
from falcon_core.models.checkpoints import hash_state_dict
from falcon_core.progress import Progress
from falcon_core.registry import Registry

__all__ = ["ClipSpec", "ClipModel", "create_clip", "register_clip", "register_clip_config",
           "CLIP_MODELS"]

_CKPT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


@dataclass
class ClipSpec:
    """name: an open_clip model name; pretrained: a tag ("openai", "laion2b_s34b_b79k", ...),
    a checkpoint file path, or None (random weights)."""

    name: str = "ViT-B-32"
    pretrained: str | None = "openai"


def _text_tower(model):
    """(tower, pool type, eos id) of an open_clip model whose text tower is a causal
    ``TextTransformer`` laid out the way ``encode_text_trimmed`` runs it, else (None, reason, None)."""
    if all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer",
                                        "ln_final", "attn_mask", "text_pool_type")):
        tower, pool, eos, cls_emb, pad = (model, model.text_pool_type,
                                          getattr(model, "text_eos_id", None), None, False)
    else:
        tower = getattr(model, "text", None)
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final",
                  "attn_mask", "pool_type")
        if tower is None or not all(hasattr(tower, a) for a in needed):
            return None, ("its text tower is not open_clip's TextTransformer "
                          f"({type(tower if tower is not None else model).__name__})"), None
        pool, eos = tower.pool_type, getattr(tower, "eos_id", None)
        cls_emb, pad = getattr(tower, "cls_emb", None), bool(getattr(tower, "use_pad_mask", False))
    if cls_emb is not None:
        return None, "its text tower appends a class token (CoCa)", None
    if pad:
        return None, "its text tower masks padding tokens", None
    mask = tower.attn_mask
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
        return None, "its text attention is not causal (no causal mask)", None
    causal = torch.triu(torch.ones(mask.shape, dtype=torch.bool, device=mask.device), 1)
    if not torch.equal(torch.isneginf(mask), causal) or bool((mask[~causal] != 0).any()):
        return None, "its text attention mask is not the causal mask", None
    if pool not in ("argmax", "eos", "first"):
        return None, f"its text pooling is {pool!r} (the last position moves when trimmed)", None
    if pool == "eos" and eos is None:
        return None, "its text pooling is 'eos' without an eos token id", None
    return tower, pool, eos


def text_trim_support(model) -> tuple[bool, str]:
    """Whether ``encode_text_trimmed`` gives ``model.encode_text``'s result, and why not."""
    tower, why, _ = _text_tower(model)
    if tower is None:
        return False, f"untrimmed: {why}"
    return True, f"trimmed to each batch's longest caption (causal mask, {why} pooling)"


def _pool_positions(tokens: torch.Tensor, pool: str, eos) -> torch.Tensor:
    if pool == "argmax":
        return tokens.argmax(dim=-1)
    if pool == "eos":
        return (tokens == eos).int().argmax(dim=-1)
    return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)


def text_lengths(model, tokens: torch.Tensor) -> torch.Tensor:
    """How many leading positions of each row ``encode_text`` needs: the pooled position + 1."""
    tower, pool, eos = _text_tower(model)
    if tower is None:
        return torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
    return _pool_positions(tokens, pool, eos) + 1


def encode_text_trimmed(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` run on the first L positions only, L = the longest caption
    of the batch (the pooled position + 1). The same as open_clip's ``encode_text`` for a causal
    tower (see :func:`text_trim_support`); for any other tower it is ``encode_text`` itself."""
    from open_clip.transformer import text_global_pool

    tower, pool, eos = _text_tower(model)
    if tower is None:
        return model.encode_text(tokens)
    L = int(_pool_positions(tokens, pool, eos).max()) + 1 if tokens.shape[0] else 1
    t = tokens[:, :L]
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(t).to(cast_dtype)
    x = x + tower.positional_embedding[:L].to(cast_dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:L, :L])
    x = tower.ln_final(x)
    x = text_global_pool(x, t, pool, eos_token_id=eos)
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


class ClipModel:
    """An open_clip model, its image preprocessing and tokenizer."""

    def __init__(self, model, preprocess, tokenizer, name: str, pretrained: str | None,
                 source: str, device: str | torch.device = "cpu"):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.source = source  # "tag", "file" or "random"
        self.device = torch.device(device)
        size = getattr(getattr(model, "visual", None), "image_size", None)
        if isinstance(size, (tuple, list)):
            size = size[-1]
        if size is None:  # pragma: no cover - every open_clip tower has it
            size = 224
        self.image_size = int(size)
        with torch.no_grad():
            self.embed_dim = int(self._encode_text_tokens(self.tokenizer(["a"])).shape[1])
        self._fingerprint: str | None = None
        # whether captions are embedded at their own length (see the module docstring)
        self.text_trim, self.text_trim_note = text_trim_support(model)

    # ---- encoding ----------------------------------------------------------------------------

    def _encode_text_tokens(self, tokens) -> torch.Tensor:
        return self.model.encode_text(tokens.to(self.device))

    @staticmethod
    def _normalise(x: torch.Tensor) -> np.ndarray:
        x = x.float()
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return x.cpu().numpy().astype(np.float32, copy=False)

    def encode_images(self, images: Sequence, batch_size: int = 64,
                      progress: Progress | None = None) -> np.ndarray:
        """PIL images -> float32 (n, embed_dim), L2-normalised."""
        def encode(batch):
            batch = [img.convert("RGB") if getattr(img, "mode", "RGB") != "RGB" else img
                     for img in batch]
            x = torch.stack([self.preprocess(img) for img in batch]).to(self.device)
            return self.model.encode_image(x)

        return self._encode(images, batch_size, encode, progress, "clip images")

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256,
                     progress: Progress | None = None, trim: bool | None = None) -> np.ndarray:
        """Captions -> float32 (n, embed_dim), L2-normalised.

        ``trim`` (default: ``self.text_trim``): sort the captions by length and run each batch
        only up to its longest caption (:func:`encode_text_trimmed`); rows come back in the
        order given. ``trim=False`` is open_clip's ``encode_text`` on the full context."""
        if trim is None:
            trim = self.text_trim
        if not trim or len(texts) == 0:
            def encode(batch):
                return self._encode_text_tokens(self.tokenizer([str(t) for t in batch]))

            return self._encode(texts, batch_size, encode, progress, "clip texts")
        return self.encode_tokens(self.tokenizer([str(t) for t in texts]), batch_size, progress)

    def encode_tokens(self, tokens: torch.Tensor, batch_size: int = 256,
                      progress: Progress | None = None) -> np.ndarray:
        """Tokenised captions (this model's tokenizer, (n, context)) -> float32 (n, embed_dim),
        L2-normalised: the trimmed path of :meth:`encode_texts` after tokenising (sorted by
        length, each batch run only up to its longest caption, rows back in the order given)."""
        lengths = text_lengths(self.model, tokens)
        order = torch.argsort(lengths, stable=True)
        sorted_tokens = tokens[order]

        def encode_sorted(idx):  # idx: a range of positions in the sorted order
            return encode_text_trimmed(self.model, sorted_tokens[idx.start:idx.stop].to(self.device))

        out_sorted = self._encode(range(len(tokens)), batch_size, encode_sorted, progress,
                                  "clip texts")
        out = np.empty_like(out_sorted)
        out[order.numpy()] = out_sorted
        return out

    def _encode(self, items: Sequence, batch_size: int, encode, progress: Progress | None,
                stage: str) -> np.ndarray:
        """``encode(batch) -> tensor (b, k)`` over ``items`` in batches, in eval mode without
        gradients, L2-normalised into one float32 array."""
        n = len(items)
        out = np.zeros((n, self.embed_dim), dtype=np.float32)
        self.model.eval()
        batch_size = max(1, int(batch_size))
        for s in range(0, n, batch_size):
            batch = items[s:s + batch_size]
            with torch.inference_mode():
                out[s:s + len(batch)] = self._normalise(encode(batch))
            if progress is not None:
                progress(min(s + batch_size, n), n, stage)
        return out

    # ---- identity ----------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """sha256 of the model name and its weights' identity (tag, checkpoint bytes, or the
        random weights themselves). A checkpoint's sha256 is stored under the file's identity
        (:func:`~falcon_core.cache.file_digest`), so a new process does not read it again."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"open_clip:{self.name}\0".encode())
            if self.source == "tag":
                h.update(f"tag:{self.pretrained}".encode())
            elif self.source == "file":
                h.update(f"file:{file_digest(self.pretrained)}".encode())
            else:
                h.update(f"random:{hash_state_dict(self.model)}".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "source": self.source,
            "image_size": self.image_size,
            "embed_dim": self.embed_dim,
            "preprocess": repr(self.preprocess),
            "fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:
        return f"ClipModel({self.name!r}, pretrained={self.pretrained!r}, k={self.embed_dim})"


_FIT_HINT = ("Choose the model name the checkpoint was trained with, and save it as a plain state "
             "dict (`torch.save(model.state_dict(), path)`).")
_MAX_KEYS = 5


def _without_unsafe_advice(text: str) -> str:
    """``text`` without any sentence that tells the user to load a file with
    ``weights_only=False`` (which would run code from the file): this tool never does that."""
    sentences = re.split(r"(?<=[.!?])\s+", str(text))
    kept = [x for x in sentences if "weights_only" not in x and "weights only" not in x.lower()]
    return " ".join(kept).strip() or "the file could not be loaded safely"


def _key_list(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_KEYS])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_KEYS else "")


def _checkpoint_problem(name: str, path: str, error: BaseException, device) -> FalconError:
    """Why the checkpoint at ``path`` could not be loaded into the CLIP model ``name``: a file
    that is not a plain state dict (said in our words), or the weights that are missing,
    unexpected or of another shape (the first few of each, by name)."""
    import open_clip

    from falcon_core.models.checkpoints import load_state_dict_file

    state: dict | None = None
    if not str(path).lower().endswith((".npz", ".npy")):
        try:
            state, _ = load_state_dict_file(path)
        except FalconError as e:
            return FalconError(f"The CLIP checkpoint {path} cannot be used: "
                               f"{_without_unsafe_advice(e.message)}", e.hint or _FIT_HINT)
    missing: list[str] = []
    unexpected: list[str] = []
    sizes: list[str] = []
    try:
        with torch.random.fork_rng(devices=[]):
            model = open_clip.create_model(name, pretrained=None, device=device)
        try:  # open_clip's own loading (with its conversions), not strict about names
            incompatible = open_clip.load_checkpoint(model, path, strict=False)
            missing = list(getattr(incompatible, "missing_keys", []) or [])
            unexpected = list(getattr(incompatible, "unexpected_keys", []) or [])
        except RuntimeError as e:  # other shapes: name them, and compare the names directly
            sizes = [f"{k} ({a} in the file, {b} in the model)" for k, a, b in re.findall(
                r"size mismatch for ([\w.]+): copying a param with shape "
                r"torch\.Size\((\[[^\]]*\])\) from checkpoint, the shape in current model is "
                r"torch\.Size\((\[[^\]]*\])\)",
                str(e))]
            if state is not None:
                if state and all(k.startswith("module.") for k in state):
                    state = {k[len("module."):]: v for k, v in state.items()}
                own = set(model.state_dict())
                missing = sorted(own - set(state))
                unexpected = sorted(set(state) - own)
    except Exception:  # noqa: BLE001 - the diagnosis must not hide the original problem
        pass
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights of the model are not in the file "
                     f"({_key_list(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} weights in the file are not in the model "
                     f"({_key_list(unexpected)})")
    if sizes:
        parts.append(f"{len(sizes)} weights have another shape ({'; '.join(sizes[:_MAX_KEYS])}"
                     + (f"; ... {len(sizes)} in all" if len(sizes) > _MAX_KEYS else "") + ")")
    if not parts:
        first = (str(error).splitlines() or [type(error).__name__])[0][:500]
        parts.append(f"{type(error).__name__}: {_without_unsafe_advice(first)}")
    return FalconError(f"The checkpoint {path} does not fit the CLIP model {name}: "
                       + "; ".join(parts) + ".", _FIT_HINT)


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.lower().endswith(_CKPT_SUFFIXES) or s.startswith("~")


CLIP_MODELS = Registry("CLIP model")


def register_clip(name: str, factory: Callable[..., "ClipModel"] | str) -> None:
    """Add (or replace) a named CLIP: ``factory(spec, **options) -> ClipModel`` (see
    :mod:`falcon_core.registry`)."""
    CLIP_MODELS.register(name, factory)


# The offline demo world's small CLIP (falcon_core/demo), an open_clip model with its own config.
register_clip("demo", "falcon_core.demo.integration:demo_clip")


def register_clip_config(path: str) -> str:
    """Register an open_clip model config file (``<name>.json``) and return the model name.

    This is how a custom CLIP architecture is used: its config goes through open_clip's own
    registry and factory, exactly like the built-in ones.
    """
    import open_clip

    p = Path(path).expanduser()
    if not p.is_file():
        raise FalconError(f"CLIP model config {path} does not exist.",
                          "Give an open_clip model name (e.g. ViT-B-32) or the path of a config JSON.")
    open_clip.add_model_config(p)
    return p.stem


def create_clip(spec: ClipSpec | str | None = None, device: str | torch.device | None = None,
                **options) -> ClipModel:
    """Build the CLIP model of ``spec``: a registered name (``options`` go to its factory; the
    demo CLIP reads ``world``), an open_clip config file (``*.json``), or an open_clip model name,
    through open_clip's factory.

    Raises :class:`OfflineError` when a pretrained tag must be downloaded and cannot be, and
    :class:`FalconError` for an unknown model name or tag, or a missing / unfitting checkpoint.
    """
    import open_clip

    if spec is None:
        spec = ClipSpec()
    elif isinstance(spec, str):
        spec = ClipSpec(spec)
    if spec.name in CLIP_MODELS:
        return CLIP_MODELS.create(spec.name, spec, **options)
    device = torch.device(device or "cpu")
    name = spec.name.strip()
    if name.endswith(".json"):
        name = register_clip_config(name)
    pretrained = spec.pretrained
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "none", "random"):
        pretrained = None

    is_hub = name.startswith(("hf-hub:", "local-dir:"))
    if not is_hub and name not in open_clip.list_models():
        models = open_clip.list_models()
        close = difflib.get_close_matches(name, models, n=5, cutoff=0.4) or models[:8]
        raise FalconError(f"open_clip has no model {name!r}.",
                          "Model names include: " + ", ".join(close) + ".")

    source = "random"
    arg = None
    if pretrained is not None and not is_hub:
        tags = open_clip.list_pretrained_tags_by_model(name)
        path = os.path.expanduser(str(pretrained))
        if pretrained in tags:
            source, arg = "tag", pretrained
        elif os.path.isfile(path):
            source, arg = "file", os.path.abspath(path)
        elif os.path.exists(path):
            raise FalconError(f"The CLIP checkpoint path is not a file: {path}",
                              "Point at the checkpoint file (.pt, .bin, .safetensors).")
        elif _looks_like_path(str(pretrained)):
            raise FalconError(f"CLIP checkpoint file not found: {path}",
                              "Check the path, or give an open_clip pretrained tag such as 'openai'.")
        else:
            raise FalconError(
                f"{pretrained!r} is neither a pretrained tag of {name} nor a file.",
                ("Tags of this model: " + ", ".join(tags) + ".") if tags else
                f"open_clip has no pretrained weights for {name}: give a checkpoint file.",
            )
    elif is_hub:
        source, arg = "tag", None

    try:
        guard = hub_offline_guard() if source == "tag" else contextlib.nullcontext()
        with guard, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random weights are reproducible
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=arg, device=device)
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:500]
        if source == "tag":
            raise OfflineError(
                f"Could not download the CLIP weights {name} / {pretrained or name} ({first}).",
                OFFLINE_HINT,
            ) from e
        if source == "file":
            raise _checkpoint_problem(name, arg, e, device) from e
        raise FalconError(f"Could not build the CLIP model {name}: {type(e).__name__}: "
                          f"{_without_unsafe_advice(first)}") from e
    try:
        with hub_offline_guard() if is_hub else contextlib.nullcontext():
            tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:
        raise OfflineError(f"Could not load the tokenizer of {name} ({type(e).__name__}: {e}).",
                           OFFLINE_HINT) from e
    return ClipModel(model, preprocess, tokenizer, name, arg if source == "file" else (pretrained if source == "tag" else None),
                     source, device=device)
