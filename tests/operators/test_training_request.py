"""One request object for a CILP training: its options make the CLI's flags and the form's fields,
and it checks every value (naming the option) before anything trains."""

import pytest
from starlette.testclient import TestClient

from cilp_plugin.cli import build_parser, main
from cilp_plugin.runs.request import TRAINING_OPTIONS, CILPRequest, options
from mm_models.choices import DEVICES, LIDAR_TOWERS, PIPELINE, PRECISIONS

URI = "@cilp/multimodal"


@pytest.fixture(scope="module")
def tiny_dataset(tiny_data):
    import uuid

    import fiftyone as fo

    from cilp_plugin.dataset import ingest

    dataset = ingest.ingest(tiny_data, f"request-{uuid.uuid4().hex[:8]}").dataset
    yield dataset
    fo.delete_dataset(dataset.name)


def test_every_option_is_a_flag_of_train_cilp_with_its_choices():
    parser = build_parser()
    train_cilp = parser._subparsers._group_actions[0].choices["train-cilp"]
    flags = {action.option_strings[0]: action for action in train_cilp._actions if action.option_strings}
    for option in options(CILPRequest):
        assert option.flag in flags, option.flag
        if option.choices and not option.many:
            assert tuple(flags[option.flag].choices) == option.choices
    assert tuple(flags["--device"].choices) == DEVICES and tuple(flags["--precision"].choices) == PRECISIONS
    assert tuple(flags["--lidar-tower"].choices) == LIDAR_TOWERS
    train = parser._subparsers._group_actions[0].choices["train"]
    assert {o.flag for o in TRAINING_OPTIONS} <= {a.option_strings[0] for a in train._actions if a.option_strings}


def test_flags_make_the_request_the_operator_would():
    args = build_parser().parse_args(["train-cilp", "ds", "--stages", "rgb2lidar,projector", "--epochs", "3",
                                      "--device", "cpu", "--lidar-tower", "trained", "--resume"])
    request = CILPRequest.from_values(vars(args))
    assert request == CILPRequest(stages=("projector", "rgb2lidar"), epochs=3, device="cpu", lidar_tower="trained",
                                  resume=True)
    assert CILPRequest.from_values(vars(build_parser().parse_args(["train-cilp", "ds"]))) == CILPRequest()


@pytest.mark.parametrize("values, named", [
    ({"device": "tpu"}, "device"), ({"precision": "fp8"}, "precision"), ({"preset": "laptop"}, "preset"),
    ({"stages": "lidar,decoder"}, "stages"), ({"stages": []}, "stages"), ({"epochs": 0}, "epochs"),
    ({"batch_size": -4}, "batch_size"), ({"epochs": {"cilp": 2, "decoder": 1}}, "epochs"),
    ({"overwrite": True, "resume": True}, "overwrite and resume"), ({"lidar_tower": "frozen"}, "lidar_tower"),
    ({"stages": ["cilp"], "lidar_from": "lidar_cnn.pt"}, "lidar_from"), ({"data": "swapped"}, "data"),
])
def test_a_bad_value_is_refused_naming_its_option(values, named):
    with pytest.raises(ValueError, match=named):
        CILPRequest(**values)


def test_the_cli_refuses_a_bad_choice_before_looking_up_the_dataset(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train-cilp", "no-such-dataset", "--device", "tpu"])
    assert exit.value.code == 2 and "--device" in capsys.readouterr().err
    assert main(["train-cilp", "no-such-dataset", "--stages", "lidar,decoder"]) == 2
    assert "stages: expected some of lidar, cilp, projector, rgb2lidar" in capsys.readouterr().err


def test_the_train_cilp_form_has_a_field_per_option_with_its_label_and_choices(tiny_dataset):
    from fiftyone.server.app import app

    with TestClient(app) as client:
        form = client.post("/operators/resolve-type", json={
            "dataset_name": tiny_dataset.name, "operator_uri": f"{URI}/train_cilp", "target": "inputs", "params": {},
        }).json()["type"]["properties"]
    for option in options(CILPRequest):
        if option.name == "stages":
            assert all(f"stage_{stage}" in form for stage in PIPELINE)
        elif option.form:
            assert form[option.name]["view"]["label"] == option.label, option.name
            if option.choices:
                assert form[option.name]["type"]["values"] == list(option.choices), option.name
        else:
            assert option.name not in form
