"""The served app's Streamlit settings (.streamlit/config.toml), read by Streamlit's own parser
from the project folder, as `streamlit run app.py` reads them there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

READ = """
import json
from streamlit import config
config.get_config_options(force_reparse=True)
names = ["runner.postScriptGC", "server.fileWatcherType", "server.runOnSave"]
print(json.dumps({n: config.get_option(n) for n in names}))
"""


def served_options() -> dict:
    out = subprocess.run([sys.executable, "-c", READ], cwd=str(ROOT), capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_full_garbage_collection_after_each_run():
    """Streamlit's default collects every generation (gc.collect(2)) on the script thread after
    each run, before the browser hears the run is over: with the models in the process that was
    0.3-0.4 s of every click on a seen feature (issue 9). A misspelt or removed option reads as
    Streamlit's default (True) and fails here."""
    assert served_options()["runner.postScriptGC"] is False


def test_the_other_served_settings_are_read_too():
    """The same parse sees the project's other settings (the file is the one read)."""
    opts = served_options()
    assert opts["server.fileWatcherType"] == "poll"
    assert opts["server.runOnSave"] is False
