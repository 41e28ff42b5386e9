"""Test-wide setup: one fresh cache folder for the whole test session.

Set FALCON_TEST_CACHE to reuse a folder between runs (the demo world's probe set, text
embeddings and explanations are then built once).
"""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ["FALCON_CACHE"] = os.environ.get("FALCON_TEST_CACHE") or tempfile.mkdtemp(
    prefix="falcon-test-cache-")
# Never reach for the network from a test: a hub download must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
