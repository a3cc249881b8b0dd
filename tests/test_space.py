"""The repository is a valid Gradio Space: README front matter the Hub accepts."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_readme_front_matter_makes_a_gradio_space_with_oauth():
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and (ROOT / front["app_file"]).is_file()
    assert front["hf_oauth"] is True and "write-repos" in front["hf_oauth_scopes"]
    assert str(front["python_version"]).startswith("3.")
    import gradio

    assert front["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]


def test_workspace_lives_under_persistent_data_on_a_space(monkeypatch, tmp_path):
    from reasonapp import settings

    monkeypatch.delenv("REASONAPP_WORKSPACE", raising=False)
    assert settings.workspace_dir() in (Path("/data/reasonapp"), settings.PROJECT_ROOT / "workspace")
    monkeypatch.setenv("REASONAPP_WORKSPACE", str(tmp_path / "ws"))
    assert settings.workspace_dir() == tmp_path / "ws" and (tmp_path / "ws").is_dir()
