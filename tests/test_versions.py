"""The dependency floors in pyproject.toml cover the newest features the code relies on.

Each row names a feature, the release that introduced it, and the text in the code that
uses it: if the text disappears the row is stale (drop it, or point it at the new use).
"""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# (package, first release with the feature, file using it, text that uses it, the feature)
FEATURES = [
    ("torch", "2.4", "mm_models/engine.py", "fused=True", "torch.optim.AdamW(fused=True) on the CPU"),
    ("torchvision", "0.19", "mm_models/engine.py", "fused=True", "the torchvision release built for torch 2.4"),
    ("wandb", "0.19.10", "mm_models/tracking.py", 'reinit="create_new"', 'wandb.init(reinit="create_new")'),
    ("fiftyone", "1.22", "plugin/writeback/staging.py", "compare_and_set",
     "ExecutionStore.compare_and_set (the staging journal)"),
    ("fiftyone", "1.0", "plugin/runs/registry.py", "register_run",
     "the run registry (dataset.init_run / register_run)"),
]


def declared_floors() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        for spec in requirement.specifier:
            if spec.operator == ">=":
                floors[requirement.name.lower()] = Version(spec.version)
    return floors


@pytest.mark.parametrize("package, minimum, path, text, feature", FEATURES, ids=[row[4] for row in FEATURES])
def test_the_declared_floor_has_the_feature(package, minimum, path, text, feature):
    assert text in (REPO / path).read_text(), f"{path} no longer uses {feature}: update this table"
    floor = declared_floors().get(package)
    assert floor is not None, f"pyproject.toml: {package} has no '>=' floor"
    assert floor >= Version(minimum), f"pyproject.toml: {package}>={floor}, but {feature} needs {package}>={minimum}"
