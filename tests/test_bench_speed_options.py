"""`python -m falcon_core.bench speed`'s options reach its rows (no row is timed here)."""

from falcon_core.bench import speed


def _names_and_options(monkeypatch, argv):
    seen = {}

    def fake_run(names, repeat, log=print, **options):
        seen["names"], seen["options"] = list(names), options
        return {"rows": {}, "peak_rss_mb": 0.0, "note": ""}

    monkeypatch.setattr(speed, "run", fake_run)
    assert speed.main(argv) == 0
    return seen["names"], seen["options"]


def test_the_search_rows_run_by_default_and_no_search_leaves_them_out(monkeypatch):
    names, _ = _names_and_options(monkeypatch, [])
    assert {"search_exact", "search_ivfpq", "precompute"} <= set(names)
    names, _ = _names_and_options(monkeypatch, ["--no-search"])
    assert "precompute" in names and not set(speed.SEARCH_ROWS) & set(names)
    names, _ = _names_and_options(monkeypatch, ["--only", "search_ivfpq,precompute", "--no-search"])
    assert names == ["precompute"]


def test_features_and_search_places_reach_the_rows(monkeypatch):
    _, options = _names_and_options(monkeypatch, [
        "--only", "precompute", "--features", "128", "--index-cache", "/x/ivf",
        "--search-data", "/x/data", "--search-rows", "1000"])
    assert options == {"features": 128, "index_cache": "/x/ivf", "search_data": "/x/data",
                       "search_rows": 1000}



def test_json_is_all_of_stdout_when_a_library_writes_to_it(monkeypatch, capfd):
    """faiss prints from C to file descriptor 1 (e.g. when it opens an index from a copied
    folder); with --json that line goes to stderr and stdout parses as JSON."""
    import json
    import os

    def noisy_run(names, repeat, log=print, **options):
        os.write(1, b"IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename\n")
        return {"rows": {}, "peak_rss_mb": 0.0, "note": ""}

    monkeypatch.setattr(speed, "run", noisy_run)
    assert speed.main(["--json", "--only", "precompute"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["rows"] == {}
    assert "IO_FLAG_ONDISK_SAME_DIR" in err


def test_a_child_process_reports_its_own_peak_rss():
    """The search rows run each variant in a child of a parent that may hold gigabytes of models;
    the child's peak must be its own (Linux carries ``ru_maxrss`` over fork and exec)."""
    import subprocess
    import sys

    import numpy as np

    from falcon_core.bench.search import peak_rss_bytes

    big = np.ones(40_000_000)  # 320 MB, touched: resident in this process
    assert peak_rss_bytes() >= big.nbytes
    code = "from falcon_core.bench.search import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout)
    assert child < big.nbytes / 2, child
    del big


class _Exec(Exception):
    pass


def _reexec_args(monkeypatch, argv, env_value=None):
    """What :func:`speed.quiet_blas_reexec` executes (``os.execve`` recorded, not run), or None."""
    import os

    seen = {}

    def fake_execve(path, args, env):
        seen.update(path=path, args=args, env=env)
        raise _Exec

    monkeypatch.setattr(os, "execve", fake_execve)
    if env_value is None:
        monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", env_value)
    try:
        speed.quiet_blas_reexec("falcon_core.bench", argv)
    except _Exec:
        return seen
    return None


def test_the_command_line_reruns_itself_once_with_openblas_threads_that_sleep(monkeypatch):
    """numpy's OpenBLAS reads its thread timeout when numpy loads (before the bench can set it):
    the command line entry re-executes itself with the variable set, the same arguments, and
    every other variable kept; not when it is set already (the re-executed process) or when
    ``--omp-wait default`` asks for the libraries' own policies."""
    import sys

    monkeypatch.setenv("FALCON_PROBE_VARIABLE", "kept")
    seen = _reexec_args(monkeypatch, ["speed", "--only", "precompute"])
    assert seen is not None
    assert seen["path"] == sys.executable
    assert seen["args"] == [sys.executable, "-m", "falcon_core.bench", "speed", "--only", "precompute"]
    assert seen["env"]["OPENBLAS_THREAD_TIMEOUT"] == "4"
    assert seen["env"]["FALCON_PROBE_VARIABLE"] == "kept"
    assert _reexec_args(monkeypatch, ["speed"], env_value="4") is None
    assert _reexec_args(monkeypatch, ["speed", "--omp-wait", "default"]) is None
    assert _reexec_args(monkeypatch, ["speed", "--omp-wait=default"]) is None
    assert _reexec_args(monkeypatch, ["speed", "--omp-wait", "passive"]) is not None


def test_the_bench_dispatch_reexecutes_speed_only(monkeypatch):
    """``python -m falcon_core.bench speed`` goes through the re-execution; another benchmark
    does not (its ``main`` is reached without it)."""
    import falcon_core.bench.__main__ as bench_main

    calls = []
    monkeypatch.setattr(speed, "quiet_blas_reexec", lambda module, argv: calls.append((module, argv)))
    monkeypatch.setattr(speed, "main", lambda argv: 0)
    assert bench_main.main(["speed", "--only", "precompute"]) == 0
    assert calls == [("falcon_core.bench", ["speed", "--only", "precompute"])]
    from falcon_core.bench import cache_verify

    monkeypatch.setattr(cache_verify, "main", lambda argv: 0)
    assert bench_main.main(["cache-verify"]) == 0
    assert len(calls) == 1

