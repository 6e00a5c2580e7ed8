"""The README's Python example runs as written (a fresh folder, its own dataset name, no App)."""

import re
import uuid
from pathlib import Path

import fiftyone as fo

from tests.fiftyone_isolation import REPO


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_trains_and_writes_back(tmp_path, monkeypatch):
    code = readme_example()
    assert "fo.launch_app(dataset)" in code
    name = f"readme-{uuid.uuid4().hex[:8]}"
    code = code.replace('name="small"', f'name="{name}"').replace("session = fo.launch_app(dataset)", "")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CILP_RUNS_DIR", str(tmp_path / "runs"))
    scope: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), scope)
        dataset = fo.load_dataset(name)
        assert Path(tmp_path, "data/small/cubes/rgb/0000.png").is_file()
        tags = dataset.count_sample_tags()  # of the rgb slice: one sample a pair
        assert (tags["train"], tags["val"]) == (320, 80)
        assert dataset.has_field("intermediate_add") and "eval_intermediate_add" in dataset.list_evaluations()
        assert scope["result"].best["val/accuracy"] > 0.5
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
