"""The assessment's lidar_cnn.pt read as a model of this library: same outputs, checked keys, no pickles.

The tests use a randomly initialised state dict with the file's keys; only the realism
benchmark reads the real file (../shared/reference/lidar_cnn.pt).
"""

import numpy as np
import pytest
import torch
from torch import nn

from cilp_plugin.data import layout, synth
from mm_models import count_parameters
from mm_models.assessment import ASSESSMENT_LIDAR, load_lidar_cnn
from mm_models.factory import build_model


def assessment_classifier() -> nn.Module:
    """The assessment's ``Classifier(in_ch=1)`` as its ``assessment_utils.py`` writes it."""
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedder = nn.Sequential(
                nn.Conv2d(1, 50, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(50, 100, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(100, 200, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(200, 200, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
            self.classifier = nn.Sequential(nn.Linear(3200, 100), nn.ReLU(), nn.Linear(100, 1))

        def get_embs(self, x):
            return self.embedder(x)

        def forward(self, x):
            return self.classifier(self.embedder(x))

    torch.manual_seed(0)
    return Classifier().eval()


@pytest.fixture
def lidar_cnn(tmp_path):
    reference = assessment_classifier()
    path = tmp_path / "lidar_cnn.pt"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_the_imported_classifier_gives_the_assessment_networks_outputs(lidar_cnn):
    reference, path = lidar_cnn
    model = load_lidar_cnn(path)
    rngs = [np.random.default_rng([3, 1, i]) for i in range(6)]
    _, depth = synth.render_batch(rngs, "sphere", synth.SceneConfig(), synth.BEAM_ANGLES, synth.BEAM_ANGLES)
    xyza = torch.from_numpy(np.stack([layout.depth_to_xyza(d, synth.BEAM_ANGLES, synth.BEAM_ANGLES) for d in depth]))
    ranges = torch.from_numpy(depth[:, None])  # the .npy as stored: no-returns at 50
    with torch.no_grad():
        ours = model({"lidar": xyza})
        theirs = reference(ranges).squeeze(1)
        assert torch.allclose(ours["logits"], theirs, rtol=1e-4, atol=1e-4)
        assert torch.allclose(model.fuse({"lidar": xyza}), reference.get_embs(ranges), rtol=1e-4, atol=1e-4)
    assert ours["embedding"].shape == (6, 100)  # the locked CILP tower's input
    assert count_parameters(model) == count_parameters(reference)
    assert count_parameters(build_model(ASSESSMENT_LIDAR)) == count_parameters(reference)


def test_a_file_of_another_network_is_refused_naming_what_differs(lidar_cnn, tmp_path):
    reference, _ = lidar_cnn
    state = reference.state_dict()
    state["classifier.0.weight"] = torch.zeros(128, 3200)
    del state["classifier.2.bias"]
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "other.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError) as error:
        load_lidar_cnn(bad)
    message = str(error.value)
    assert str(bad) in message and "not the assessment's Classifier(in_ch=1)" in message
    assert "missing classifier.2.bias [1]" in message and "unexpected extra.weight [1]" in message
    assert "classifier.0.weight has shape [128, 3200], expected [100, 3200]" in message


class Payload:  # an arbitrary object: torch.load(weights_only=True) must never build it
    pass


def test_a_pickled_object_is_never_unpickled(tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save({"embedder.0.weight": Payload()}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_lidar_cnn(pickled)
    with pytest.raises(ValueError, match="not found"):
        load_lidar_cnn(tmp_path / "missing.pt")


def test_the_range_input_reads_the_stored_ranges_unmasked():
    with pytest.raises(ValueError, match="mask_no_return"):
        ASSESSMENT_LIDAR.__class__(family="lidar", lidar_input="range")
