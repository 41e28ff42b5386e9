"""What the cache holds and how it is cleaned: listing entries, sizes, clearing namespaces,
removing stale temp files, and moving a file that failed its check to ``quarantine/``.

:class:`CacheHousekeeping` is mixed into :class:`~falcon_core.cache.DiskCache`; it uses the
cache's ``root``, ``_ns_dir``, ``_notice`` and memory fallback.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Optional

QUARANTINE = "quarantine"
#: Folders under the root that hold no cache entries: downloaded data sets, files that failed
#: their check, and the app's list of workspaces chosen on this server (see ``ui/links.py``).
#: sha256 of model checkpoints stored under the file's identity (``cache.file_digest``)
FILE_DIGESTS = "file_digests"
RESERVED_NAMESPACES = ("datasets", QUARANTINE, "workspaces", FILE_DIGESTS)
TMP_MAX_AGE_S = 3600.0


class CacheHousekeeping:
    """Mixin of :class:`~falcon_core.cache.DiskCache`: listing, clearing, quarantine."""

    def _quarantine(self, path: Path, reason: str) -> None:
        """Move a file that failed its check out of the way (kept for a bug report)."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = Path(path.name)
        dest = (self.root / QUARANTINE / rel.parent
                / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}")
        try:
            st = path.stat()
        except OSError:
            return  # gone already (another process moved it)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
        except FileNotFoundError:
            return
        except OSError:
            # a read-only folder: the file stays, and this process never reads it again
            self._ignored.add((str(path), st.st_size, st.st_mtime_ns))
            where = "it could not be moved (the folder cannot be written) and is ignored"
        else:
            where = f"it is kept for a bug report in {dest}"
            try:
                dest.with_name(dest.name + ".txt").write_text(
                    f"{rel}: {reason}\n", encoding="utf-8")
            except OSError:
                pass
        self.quarantined.append({"file": str(rel), "reason": reason,
                                 "moved_to": str(dest) if "kept" in where else ""})
        self._notice(f"A cached file failed its check and is recomputed: {rel} — {reason}; "
                     f"{where}.")

    def _skip(self, path: Path) -> bool:
        """True when the file is missing, or one this process already found bad."""
        try:
            st = path.stat()
        except OSError:
            return True
        if not path.is_file():
            return True
        return (str(path), st.st_size, st.st_mtime_ns) in self._ignored

    def _namespaces(self, namespace: Optional[str]) -> list[Path]:
        if namespace is not None:
            d = self._ns_dir(namespace)
            return [d] if d.is_dir() else []
        if not self.root.is_dir():
            return []
        return sorted(d for d in self.root.iterdir()
                      if d.is_dir() and d.name not in RESERVED_NAMESPACES)

    @staticmethod
    def _tree_size(path: Path) -> int:
        if path.is_file():
            return path.stat().st_size
        total = 0
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        return total

    def entries(self, namespace: Optional[str] = None) -> list[dict]:
        """What is stored: one dict per entry with ``namespace``, ``key``, ``suffix``, ``path``,
        ``size_bytes``, ``mtime`` and ``complete`` (False for an unfinished chunked array).
        Temp files are not listed."""
        out = []
        for ns_dir in self._namespaces(namespace):
            ns = ns_dir.relative_to(self.root).as_posix()
            for p in sorted(ns_dir.iterdir()):
                if p.name.endswith(".tmp"):
                    continue
                if p.is_dir():
                    if not p.name.endswith(".parts"):
                        continue
                    key, suffix, complete = p.name[: -len(".parts")], ".parts", False
                else:
                    key, dot, ext = p.name.partition(".")
                    suffix, complete = (dot + ext if dot else ""), True
                try:
                    mtime = p.stat().st_mtime
                except OSError:
                    continue
                out.append({"namespace": ns, "key": key, "suffix": suffix, "path": str(p),
                            "size_bytes": self._tree_size(p), "mtime": mtime,
                            "complete": complete})
        return out

    def size_bytes(self, namespace: Optional[str] = None) -> int:
        """Total bytes on disk of one namespace, or of every cache namespace."""
        return sum(self._tree_size(d) for d in self._namespaces(namespace))

    def clear(self, namespace: Optional[str] = None) -> int:
        """Delete one namespace, or every cache namespace (not ``datasets`` nor ``quarantine``).
        Returns the number of bytes freed (approximately)."""
        freed = 0
        for d in self._namespaces(namespace):
            freed += self._tree_size(d)
            shutil.rmtree(d, ignore_errors=True)
        with self._lock:
            self._memory.clear()
            self._memory_bytes = 0
        return freed

    def clear_tmp(self, max_age_s: float = TMP_MAX_AGE_S) -> int:
        """Remove ``*.tmp`` files (left by killed writes) older than ``max_age_s`` seconds.
        Younger ones may belong to a write in progress and are kept. Returns how many were
        removed."""
        if not self.root.is_dir():
            return 0
        now = time.time()
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.endswith(".tmp"):
                    continue
                p = os.path.join(dirpath, name)
                try:
                    if now - os.stat(p).st_mtime > max_age_s:
                        os.unlink(p)
                        removed += 1
                except OSError:
                    pass
        return removed
