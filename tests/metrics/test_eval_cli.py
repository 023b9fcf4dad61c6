"""`loom eval ...` from the command line: errors that say what to put where, and a real sweep."""

from __future__ import annotations

import json

import pytest

from engine.cli import main


def test_eval_fid_without_weights_says_where(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["eval", "fid", str(tmp_path / "a"), str(tmp_path / "a"), "--models-dir", str(tmp_path / "models")])
    assert "pt_inception-2015-12-05" in str(exc.value.code)


def test_eval_fid_runs(inception_models_dir, tmp_path, capsys):
    from tests.metrics.test_evaluate_nodes import _write_images

    _write_images(tmp_path / "a", 4, seed=1)
    _write_images(tmp_path / "b", 4, seed=2, shift=0.3)
    assert main(["eval", "fid", str(tmp_path / "a"), str(tmp_path / "b"), "--kid", "--method", "eig", "--json", "--models-dir", str(inception_models_dir)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metric"] == "FID" and doc["mean"] > 0 and "kid" in doc


def test_eval_sweep_writes_files(tmp_path, capsys):
    from tests import tiny_models

    tiny_models.make_tiny_sd15(tmp_path / "models" / "checkpoints" / "tiny")
    rc = main(["eval", "sweep", "--model", "tiny", "--schedulers", "euler,ddim", "--steps", "2", "--size", "64",
               "--models-dir", str(tmp_path / "models"), "--out", str(tmp_path / "out"), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("grid", "table_csv", "table_json"):
        assert (tmp_path / "out").resolve() in __import__("pathlib").Path(doc[key]).parents
        assert __import__("pathlib").Path(doc[key]).is_file()
