"""engine/settings.py: folders come from one settings object, never from globals."""

import os

from engine.settings import REPO_ROOT, Settings, default_user_dir, offline


def test_folders_follow_the_settings(tmp_path):
    s = Settings(models_dir=tmp_path / "m", input_dir=tmp_path / "i", output_dir=tmp_path / "o", user_dir=tmp_path / "u")
    f = s.folders()
    assert (f.models, f.input, f.output, f.user) == (tmp_path / "m", tmp_path / "i", tmp_path / "o", tmp_path / "u")
    assert f.temp == tmp_path / "o" / "temp"
    assert f.folder_of("output") == f.output and f.folder_of("temp") == f.temp and f.folder_of("input") == f.input


def test_two_settings_do_not_share_state(tmp_path):
    a, b = Settings(output_dir=tmp_path / "a"), Settings(output_dir=tmp_path / "b")
    assert a.folders().output != b.folders().output


def test_model_folders_user_first_then_repo(tmp_path):
    s = Settings(models_dir=tmp_path)
    assert s.model_folders("loras") == [(tmp_path / "loras").resolve(), (REPO_ROOT / "models" / "loras").resolve()]
    assert Settings(models_dir=REPO_ROOT / "models").model_folders("vae") == [(REPO_ROOT / "models" / "vae").resolve()]


def test_user_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LOOM_USER_DIR", str(tmp_path / "x"))
    assert default_user_dir() == tmp_path / "x"
    monkeypatch.delenv("LOOM_USER_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_user_dir() == tmp_path / "xdg" / "latentloom"


def test_offline_sets_hub_variables_without_overriding(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    offline()
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "0"  # an explicit choice is kept
