"""N classes: the head (one logit for two classes, N beyond), its loss and metrics, predictions,
the class names in a run's manifest, and CILP's rgb2lidar following its LiDAR classifier."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mm_testdata import TINY, random_pairs, seed_all

from mm_models import ModelConfig, TrainConfig, build_model, count_parameters, predict, train
from mm_models.inference import Predictions
from mm_models.losses import Classification
from mm_models.metrics import binary_metrics, classification_metrics, multiclass_metrics


def test_two_classes_keep_one_logit_and_the_reference_counts():
    two = build_model(ModelConfig(family="intermediate", fusion="add"))
    assert two.head[-1].out_features == 1
    assert count_parameters(two) == 2879405
    assert ModelConfig().to_dict()["num_classes"] == 2
    assert ModelConfig.from_dict({k: v for k, v in ModelConfig().to_dict().items() if k != "num_classes"}) \
        == ModelConfig()


@pytest.mark.parametrize("family", ["early", "late", "intermediate", "rgb", "lidar"])
def test_n_classes_get_a_logit_each(family):
    seed_all()
    config = ModelConfig(family=family, widths=(4, 8, 8, 8), num_classes=4)
    model = build_model(config)
    hidden = model.head[-1].in_features
    assert model.head[-1].out_features == 4
    two = build_model(ModelConfig(family=family, widths=(4, 8, 8, 8)))
    assert count_parameters(model) - count_parameters(two) == 3 * (hidden + 1)
    out = model({"rgb": torch.rand(3, 4, 64, 64), "lidar": torch.rand(3, 4, 64, 64)})
    assert out["logits"].shape == (3, 4) and out["embedding"].shape == (3, hidden)


@pytest.mark.parametrize("value", [1, 0, 2.5, "3"])
def test_num_classes_is_checked(value):
    with pytest.raises(ValueError, match="num_classes: expected an integer of at least 2"):
        ModelConfig(num_classes=value)


def test_classification_loss_is_bce_for_one_logit_and_cross_entropy_for_more():
    objective = Classification()
    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    assert objective.loss({"logits": logits}, labels) == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, labels).item())
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0.0, 1.0, 1.0])  # the data's labels are float class indices
    assert objective.loss({"logits": logits}, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels.long()).item())


def test_multiclass_metrics_per_class_and_macro():
    # truth 0 0 1 1 2 2, predicted 0 1 1 1 2 0
    logits = F.one_hot(torch.tensor([0, 1, 1, 1, 2, 0]), 3).float() * 5
    targets = torch.tensor([0, 0, 1, 1, 2, 2]).float()
    row = multiclass_metrics(logits, targets)
    assert row["accuracy"] == pytest.approx(4 / 6)
    assert [row[f"precision_{k}"] for k in range(3)] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [row[f"recall_{k}"] for k in range(3)] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert row["f1_1"] == pytest.approx(0.8)
    assert row["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert row["macro_recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert row["macro_f1"] == pytest.approx((1 / 2 + 0.8 + 2 / 3) / 3)
    assert row["loss"] == pytest.approx(F.cross_entropy(logits, targets.long()).item())
    assert classification_metrics(logits, targets) == row


def test_a_class_never_predicted_nor_present_scores_zero_not_nan():
    row = multiclass_metrics(torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]]), torch.tensor([0.0, 1.0]))
    assert row["precision_2"] == row["recall_2"] == row["f1_2"] == 0.0
    assert row["accuracy"] == 1.0


def test_two_class_metrics_keep_their_names():
    logits, targets = torch.tensor([1.0, -1.0, 2.0]), torch.tensor([1.0, 0.0, 0.0])
    assert classification_metrics(logits, targets) == binary_metrics(logits, targets)
    assert set(binary_metrics(logits, targets)) == {"loss", "accuracy", "precision", "recall", "f1"}


def test_predictions_give_probabilities_labels_and_confidences():
    two = Predictions(np.array([2.0, -1.0], np.float32), 1 / (1 + np.exp(-np.array([2.0, -1.0]))), np.zeros((2, 3)))
    assert two.labels.tolist() == [1, 0] and two.label_names == ["sphere", "cube"]
    assert two.class_probabilities.sum(1) == pytest.approx([1, 1])
    assert two.confidences == pytest.approx([1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-1))])
    logits = np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]], np.float32)
    probabilities = torch.softmax(torch.from_numpy(logits), 1).numpy()
    three = Predictions(logits, probabilities, np.zeros((2, 3)))
    assert three.num_classes == 3 and three.labels.tolist() == [1, 0]
    assert three.names(["cube", "sphere", "cylinder"]) == ["sphere", "cube"]
    assert three.confidences == pytest.approx(probabilities.max(1))
    with pytest.raises(ValueError, match="class_names: expected 3 names, got 2"):
        _ = three.label_names


def test_a_three_class_run_records_its_class_names_and_predicts_three(tmp_path):
    seed_all()
    data = random_pairs(12, 3)
    config = ModelConfig(family="lidar", widths=(4, 8, 8, 8), num_classes=3)
    result = train(config, TrainConfig(epochs=1, batch_size=6, device="cpu", precision="fp32"), data, data,
                   tmp_path / "run", class_names=["cube", "sphere", "cylinder"])
    assert result.manifest["class_names"] == ["cube", "sphere", "cylinder"]
    assert {"val/macro_f1", "val/precision_2", "val/recall_0"} <= set(result.best)
    out = predict(result.run_dir, data, device="cpu")
    assert out.logits.shape == (12, 3) and out.probabilities.sum(1) == pytest.approx(np.ones(12), abs=1e-5)


def test_labels_beyond_the_model_and_names_of_another_count_are_refused(tmp_path):
    data, options = random_pairs(8, 3), TrainConfig(epochs=1, batch_size=4, device="cpu")
    with pytest.raises(ValueError, match=r"train_data.labels: class index 2 found, the model has 2 classes"):
        train(TINY, options, data, data, tmp_path / "a")
    with pytest.raises(ValueError, match=r"class_names: 2 names \(a, b\) for a model of 3 classes"):
        train(ModelConfig(family="lidar", num_classes=3), options, data, data, tmp_path / "b",
              class_names=["a", "b"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
