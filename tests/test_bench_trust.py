"""``python -m falcon_core.bench trust --docs``: the README block and docs/trust.json come from one
result (formatted from a saved one here; the run itself is the benchmark)."""

import json

from falcon_core.bench import faithfulness as trust


def _result():
    split = {"separation_auc": 0.875, "with_truth": 3, "without_truth": 5,
             "mean_with_truth": 0.9, "mean_without_truth": 0.6}
    return {
        "seconds": 12.0, "cold_explanations": 2, "seed": 0,
        "validation": {"target": 0.8, "auc": split, "passes": True,
                       "spearman": {**split, "separation_auc": 0.7}},
        "validation_shape": {"auc": {**split, "separation_auc": 0.75}},
        "comparison": {
            "names": {"a": "demo", "b": "demo-uncorrelated"}, "explained": {"a": 8, "b": 8},
            "maps": {"b_to_a": {"from": "demo-uncorrelated", "to": "demo", "r2_test": 0.61,
                                "features_well_predicted": 5, "features": 8,
                                "lambda_relative": 0.01}},
            "only": {"a": [{"concept": "brick", "features": [1, 2]}], "b": []},
            "spurious_only": {"a": [], "b": [{"concept": "sand", "features": [4]}]},
            "reliance_tests": {"tests": 40, "z": 3.22},
            "reliance": [{"concept": "heart", "companion": "brick", "in": "a",
                          "auc": {"a": 0.7, "b": 0.6}, "difference": 0.1,
                          "difference_interval": [0.05, 0.15],
                          "images": {"both_named": 500, "concept_only": 380}}]},
        "planted": [{"features_from": "ground truth", "correlation": "shape=star -> "
                     "background=grass", "concept": "star", "companion": "field",
                     "features": {"a": [1], "b": [2, 3]}, "auc": {"a": 0.72, "b": 0.76},
                     "difference": -0.04, "difference_interval": [-0.06, -0.02], "in": None},
                    {"features_from": "explanations", "correlation": "shape=star -> "
                     "background=grass", "concept": "star", "companion": "field",
                     "features": {"a": [], "b": [2]}, "in": None, "untested": "no features"}],
    }


def test_markdown_holds_the_figures():
    md = trust.markdown(_result())
    assert ("| score (AUC of the kept concepts), all clear features | **0.88** (target ≥ 0.8) "
            "| 3 | 5 |") in md
    assert "| score, shape features only | 0.75 |" in md
    assert "| demo-uncorrelated → demo | 0.610 | 5 of 8 | 0.01 |" in md
    assert "| concepts encoded (a feature's top 3 words) | brick (2) | – |" in md
    assert "| removed as spurious | – | sand (1) |" in md
    assert "| heart | brick | demo | 0.70 | 0.60 | +0.100 [+0.050, +0.150] | 500 / 380 |" in md
    assert ("| star → field | ground truth | 1 / 2 | 0.72 | 0.76 | -0.040 [-0.060, -0.020] | "
            "neither |") in md
    assert "| star → field | explanations | 0 / 1 | – | – | not tested | – |" in md


def test_docs_rewrite_the_readme_block_only(tmp_path, monkeypatch, capsys):
    saved = tmp_path / "trust.json"
    saved.write_text(json.dumps(_result()))
    readme = tmp_path / "README.md"
    begin = f"<!-- trust: begin ({trust.DOCS_COMMAND}) -->"
    readme.write_text(f"intro\n{begin}\nold figures\n<!-- trust: end -->\nrest\n")
    monkeypatch.setattr(trust, "README", readme)
    assert trust.main(["--from-json", str(saved), "--docs", "--no-progress"]) == 0
    text = readme.read_text()
    assert text.startswith(f"intro\n{begin}\n") and text.endswith("<!-- trust: end -->\nrest\n")
    assert "old figures" not in text and "**0.88**" in text
    # no markers: a clear error, nothing written
    readme.write_text("no block here\n")
    assert trust.main(["--from-json", str(saved), "--docs", "--no-progress"]) == 2
    assert readme.read_text() == "no block here\n"
    assert "Expected one 'trust' block" in capsys.readouterr().err
