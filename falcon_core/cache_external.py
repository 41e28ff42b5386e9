"""Files another library reads by path, kept in the cache: a faiss index is opened by faiss from
a path and its inverted lists are memory-mapped, so the cache cannot read it for the library.
Such a file is sealed with the cache's checksum trailer once written (:meth:`seal`) and verified
before its path is handed out (:meth:`verified_path`); one that fails goes to quarantine like any
cache file.

:class:`ExternalFiles` is mixed into :class:`~falcon_core.cache.DiskCache`; it uses the cache's
``_skip``, ``_checked``, ``_quarantine``, ``_lock`` and ``_verified_files``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from . import cache_format as fmt


class ExternalFiles:
    """Mixin of :class:`~falcon_core.cache.DiskCache`: sealed files other libraries read."""

    def seal(self, path: str | os.PathLike) -> Path:
        """Append the checksum trailer to a file another library has written (in a temporary
        place: rename it into the cache afterwards); see :func:`cache_format.seal_file`."""
        return fmt.seal_file(path)

    def verified_path(self, path: str | os.PathLike) -> Optional[Path]:
        """``path`` when the file is there and its trailer and digest check (hashed block by
        block, once per process and version of the file); None when missing or failing its
        check (then it is moved to quarantine, like any cache file). The trailer stays at the
        end of the file: a reader that knows the payload's length ignores it."""
        path = Path(path)
        if self._skip(path):
            return None
        st = path.stat()
        ident = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            if ident in self._verified_files:
                return path

        def check() -> Path:
            fmt.verify_file(path, st.st_size)
            return path

        ok, got = self._checked(path, check)
        if ok:
            with self._lock:
                self._verified_files.add(ident)
        return got

    def quarantine(self, path: str | os.PathLike, reason: str) -> None:
        """Move a cache file that failed a check made by its reader out of the way (kept for a
        bug report, said once), so it is rebuilt."""
        self._quarantine(Path(path), reason)
