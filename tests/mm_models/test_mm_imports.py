"""How mm_models hangs together: torch-free choices, a lazy package, no import circle, no FiftyOne."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mm_models

PACKAGE = Path(mm_models.__file__).parent
#: every name ``from mm_models import ...`` offered before the package imported lazily (save_tensors and
#: load_tensors, used by tests alone, moved to tests/mm_models/mm_testdata.py)
PUBLIC = (
    "CILP", "CILPConfig", "CLASS_NAMES", "CheckpointError", "Classification", "Contrastive", "Embedder",
    "FAMILIES", "FUSION_MODES", "Fusion", "FusionClassifier", "KINDS", "LoadedRun", "ModelConfig", "ModelSpec",
    "PairTensors", "Parent", "Predictions", "ProjectorConfig", "RGBToLiDARConfig", "Regression", "TrainConfig",
    "TrainResult", "build", "build_model", "count_parameters", "fingerprint", "load_run", "load_weights",
    "outputs_of", "parent", "predict", "save_weights", "train",
    # submodules
    "checkpoint", "data", "distributed", "engine", "losses",
)


def python(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("statement", ["import mm_models.choices", "from mm_models import choices",
                                       "from mm_models.choices import DEVICES, check_choice",
                                       "import mm_models.arrays"])
def test_the_choices_import_without_torch(statement):
    python(f"{statement}\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'")


def test_every_public_name_is_importable_and_listed():
    python(f"from mm_models import {', '.join(PUBLIC)}")
    assert set(PUBLIC) - {"checkpoint", "data", "distributed", "engine", "losses"} <= set(mm_models.__all__)
    assert set(mm_models.__all__) <= set(dir(mm_models))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        mm_models.nothing_here  # noqa: B018


def test_the_choices_agree_with_the_tables_that_use_them():
    from mm_models import choices, presets, stages

    assert tuple(stages.KINDS) == choices.KIND_NAMES
    assert all(tuple(settings) == choices.PRESET_MODELS for settings in presets.PRESETS.values())
    assert tuple(presets.PRESETS) == choices.PRESETS_NAMES
    assert set(choices.DEFAULT_FUSION) == set(choices.FAMILIES)
    assert set(choices.DEFAULT_FUSION.values()) <= set(choices.FUSION_MODES)
    assert set(choices.FUSED_FAMILIES) == set(choices.FAMILIES) - set(choices.MODALITIES)


def imports_of(path: Path) -> set[str]:
    """The modules ``path`` imports, anywhere in it (functions included): mm_models submodules by
    their short name, anything else by its top-level package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and not node.module:  # from . import a, b
                found |= {alias.name for alias in node.names}
            elif node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("mm_models."):
                found.add(node.module.split(".")[1])
            elif node.module == "mm_models":
                found |= {alias.name for alias in node.names}
            elif node.module:
                found.add("<external>" + node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.add(parts[1] if parts[0] == "mm_models" and len(parts) > 1 else "<external>" + parts[0])
    return found


def test_no_import_circle_and_no_fiftyone():
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in imports_of(path) if m in modules} for name, path in modules.items()}
    for name, path in modules.items():
        outside = {m.removeprefix("<external>") for m in imports_of(path) if m.startswith("<external>")}
        assert not outside & {"fiftyone", "cilp_plugin", "plugin", "operators"}, (name, outside)

    def visit(name: str, stack: list[str], done: set[str]) -> None:
        if name in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(name):] + [name]))
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, stack + [name], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert graph["choices"] == set() and graph["arrays"] == set()
