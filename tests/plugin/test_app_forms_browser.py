"""Every form of the plugin, opened, filled and run in the FiftyOne App as a person does.

For each operator listed in ``fiftyone.yml`` the test opens its form from the operator
browser, fails on any error the page shows (a ``pageerror`` event, a "Minified React
error", an "Error:" trace in the modal), fills every field it can with a value other
than its default, runs it ("Execute", or "Schedule" for the trainings, which the App
offers first when its server runs with ``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true`` as
``cilp app`` runs it; the queue is then run in this process by FiftyOne's
``DelegatedOperationService``, as ``fiftyone delegated launch`` would) and checks that
the values reached the run: the stages and epochs trained, the fields written, the split
made, the dataset generated.

A screenshot of each filled form is kept in ``test-artifacts/`` (``app_form_<operator>.png``).
"""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fiftyone as fo
import pytest
import yaml
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionRunState

from cilp_plugin import writeback
from cilp_plugin.data import synth
from cilp_plugin.dataset import class_colours, ingest, splits, views
from cilp_plugin.runs import registry, training
from mm_models import load_run

from .app_browser import REPO, artifacts_dir, clear_screenshots, needs_chromium, running_app
from .test_app_operators_browser import (  # the helpers of the other operator tests
    PLUGIN,
    SHOW_TIMEOUT,
    executed,
    field_input,
    open_dataset,
    open_operator,
    problem_report,
    run_operator,
    show_field_on_tiles,
    wait_for_form_params,
    wait_for_tiles,
)

N_PER_CLASS = 4
CLASSES = ("cube", "sphere", "cylinder")
#: the read-only line the training and apply forms show of the dataset's classes
CLASSES_NOTICE = "3 classes: cube, sphere, cylinder — a softmax head of 3 logits"
OPERATORS = yaml.safe_load((REPO / "fiftyone.yml").read_text())["operators"]
LABELS = {  # the label each operator is listed under in the App
    "load_rgb_lidar_dataset": "CILP: load RGB/LiDAR dataset",
    "create_splits": "CILP: create train/val/test splits",
    "train_fusion": "CILP: train a fusion model",
    "train_cilp": "CILP: train the cross-modal pipeline",
    "apply_model": "CILP: apply a trained model",
    "find_cross_modal_matches": "CILP: find cross-modal matches",
}
QUEUE_TIMEOUT = 30.0  # s, for a scheduled operation to reach the queue

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module", autouse=True)
def _fresh_screenshots():
    clear_screenshots("app_form_")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """CILP_RUNS_DIR of the App server and of the executor that runs here."""
    path = tmp_path_factory.mktemp("form-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CILP_RUNS_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, runs_dir):
    """The App server as ``cilp app`` starts it: "Schedule" offered."""
    with running_app(tmp_path_factory.mktemp("forms-server") / "app_server.log",
                       env={"FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS": "true"}) as server:
        yield server


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory):
    """12 groups (4 each of cube, sphere, cylinder), split 6 train / 6 val; tests work on copies."""
    root = synth.generate(tmp_path_factory.mktemp("forms") / "data", n_per_class=N_PER_CLASS, seed=4, workers=1,
                          classes=CLASSES)
    dataset = ingest.ingest(root, f"cilp-forms-{uuid.uuid4().hex[:8]}").dataset
    splits.create_splits(dataset, val=0.5, seed=0)
    yield dataset
    dataset.delete()


@pytest.fixture(scope="module")
def make_dataset(base_dataset):
    made = []

    def make(what: str) -> fo.Dataset:
        dataset = base_dataset.clone(f"{base_dataset.name}-{what}", persistent=True)
        made.append(dataset)
        return dataset

    yield make
    for dataset in made:
        if not dataset.deleted:
            dataset.delete()


@pytest.fixture
def app_page(page):
    """The other tests' page, also keeping its uncaught exceptions apart (``page.page_errors``)."""
    page.page_errors = []
    page.on("pageerror", lambda error: page.page_errors.append(str(error)))
    return page


# --------------------------------------------------------------------------- helpers


FORM_ERRORS = re.compile(r"Minified React error|\bError:|Something went wrong")


def check_form(page, form, server, operator: str) -> None:
    """Fail when the page or the form shows an error (the React error #31 of a crashed field)."""
    crashed = list(page.page_errors)
    text = form.inner_text() if form.count() else ""
    if crashed or FORM_ERRORS.search(text):
        screenshot_form(page, operator)
        pytest.fail(f"the {operator} form shows an error: page errors {crashed}, form text {text[:1500]!r}\n"
                    f"{problem_report(page, server)}")


def screenshot_form(page, operator: str) -> None:
    page.screenshot(path=artifacts_dir() / f"app_form_{operator}.png")


def open_form(page, server, operator: str, heading: str):
    """The operator's form, resolved (its ``heading`` shown) and free of errors."""
    form = open_operator(page, LABELS[operator])
    deadline = time.monotonic() + SHOW_TIMEOUT
    while not form.get_by_text(heading, exact=True).count():
        check_form(page, form, server, operator)
        if time.monotonic() > deadline:
            pytest.fail(f"the {operator} form never showed {heading!r}: {form.inner_text()[:1000]!r}")
        page.wait_for_timeout(200)
    check_form(page, form, server, operator)
    return form


def check_classes_shown(form) -> None:
    assert CLASSES_NOTICE in form.inner_text(), f"no line of the classes: {form.inner_text()[:1000]!r}"


def choose_radio(form, field: str, value: str) -> None:
    """Tick the choice ``value`` of the radio group labelled ``field``."""
    group = form.locator(f'xpath=.//p[normalize-space(.)="{field}"]/following::div[@role="radiogroup"][1]')
    group.get_by_role("radio", name=value, exact=True).check()


def set_checkbox(form, label: str, ticked: bool) -> None:
    box = form.get_by_role("checkbox", name=label, exact=True)
    box.set_checked(ticked)


def press(page, form, server, operator: str, name: str) -> None:
    """Press the form's button ``name`` once the form has resolved its last change (it is disabled meanwhile)."""
    button = form.get_by_role("button", name=name, exact=True)
    deadline = time.monotonic() + SHOW_TIMEOUT
    while not button.is_enabled():
        if time.monotonic() > deadline:
            pytest.fail(f"the {operator} form's {name} button stayed disabled: {form.inner_text()[-800:]!r}")
        page.wait_for_timeout(200)
    check_form(page, form, server, operator)
    button.click()


def schedule(page, form, server, operator: str) -> dict:
    """Press "Schedule" (the App's first choice for a training); the queued operation."""
    press(page, form, server, operator, "Schedule")
    service = DelegatedOperationService()
    deadline = time.monotonic() + QUEUE_TIMEOUT
    while time.monotonic() < deadline:
        queued = service.list_operations(operator=f"{PLUGIN}/{operator}")
        if queued:
            return queued[-1]
        check_form(page, form, server, operator)
        page.wait_for_timeout(250)
    pytest.fail(f"Schedule queued no {operator} operation\n{problem_report(page, server)}")


def run_queue(operation, operator: str):
    """Run the queue here, as an executor does; the finished operation. (In a thread of its own:
    FiftyOne runs each operation with ``asyncio.run``, which Playwright's loop in this thread forbids.)"""
    service = DelegatedOperationService()
    with ThreadPoolExecutor(1) as thread:
        thread.submit(service.execute_queued_operations, operator=f"{PLUGIN}/{operator}", log=True).result()
    done = service.get(operation.id)
    assert done.run_state == ExecutionRunState.COMPLETED, f"{operator}: {done.run_state}: {done.result}"
    return done


def queued_params(operation) -> dict:
    return operation.context.request_params["params"]


# --------------------------------------------------------------------------- each form, filled and run


def load_rgb_lidar_dataset(page, server, make_dataset, runs_dir):
    open_dataset(page, server, make_dataset("load"))
    name = f"cilp-forms-loaded-{uuid.uuid4().hex[:6]}"
    form = open_form(page, server, "load_rgb_lidar_dataset", "Load RGB/LiDAR data")
    field_input(form, "Dataset name").fill(name)
    shapes = form.locator('xpath=.//p[normalize-space(.)="Classes"]/following::*[@role="combobox"][1]')
    shapes.click()
    offered = page.get_by_role("option").all_inner_texts()
    assert offered == ["cube", "sphere", "cylinder", "cone", "torus", "pyramid"], f"the shapes offered: {offered}"
    page.get_by_role("option", name="cone", exact=True).click()
    page.keyboard.press("Tab")  # closes the list (Escape would close the whole form)
    page.get_by_role("listbox").wait_for(state="hidden")
    field_input(form, "Pairs per class").fill("3")
    field_input(form, "Seed").fill("5")
    field_input(form, "Image size").fill("32")
    field_input(form, "LiDAR beams").fill("16")
    wait_for_form_params(page, "load_rgb_lidar_dataset", source="synthetic", name=name, n_per_class=3, seed=5,
                         classes=["cube", "sphere", "cone"], image_size=32, beams=16)
    screenshot_form(page, "load_rgb_lidar_dataset")
    try:
        run_operator(page, form, server, output=True)
        page.wait_for_url(re.compile(f"/datasets/{name}"), timeout=SHOW_TIMEOUT * 1000)  # the App opens it
        dataset = fo.load_dataset(name)
        assert len(dataset) == 9 and sorted(dataset.group_slices) == ["depth", "lidar", "rgb"]
        labels = dataset.select_group_slices("rgb").count_values("ground_truth.label")
        assert labels == {"cube": 3, "sphere": 3, "cone": 3} and dataset.default_classes == ["cube", "sphere", "cone"]
        assert "32px-16beams-3-seed5" in dataset.select_group_slices("rgb").first().filepath  # the folder names them
        assert (dataset.info["image_size"], dataset.info["beams"]) == ([32, 32], [16, 16])
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def create_splits(page, server, make_dataset, runs_dir):
    dataset = make_dataset("splits")
    pair_ids = splits.pair_ids(dataset)
    wanted = splits.make_split(pair_ids, val=0.25, test=0.25, seed=11, stratify=False)
    open_dataset(page, server, dataset)
    form = open_form(page, server, "create_splits", "Create splits")
    field_input(form, "Validation fraction").fill("0.25")
    field_input(form, "Test fraction").fill("0.25")
    field_input(form, "Seed").fill("11")
    set_checkbox(form, "Keep the class balance in every split", False)
    wait_for_form_params(page, "create_splits", val=0.25, test=0.25, seed=11, stratify=False)
    screenshot_form(page, "create_splits")
    run_operator(page, form, server, output=True)
    assert executed(page, "create_splits")["params"] == {
        "val": 0.25, "test": 0.25, "subset": 1, "seed": 11, "stratify": False}
    dataset.reload()
    made = splits.read_split(dataset)
    assert (sorted(made.train), sorted(made.val), sorted(made.test)) == \
        (sorted(wanted.train), sorted(wanted.val), sorted(wanted.test))
    assert len(made.test) == 3  # a quarter of 12 pairs


def train_fusion(page, server, make_dataset, runs_dir):
    dataset = make_dataset("fusion")
    open_dataset(page, server, dataset)
    form = open_form(page, server, "train_fusion", "Train a fusion model")
    check_classes_shown(form)
    form.get_by_role("combobox").first.click()
    page.get_by_role("option", name="late", exact=True).click()
    wait_for_form_params(page, "train_fusion", family="late")
    choose_radio(form, "Fusion", "mul")
    choose_radio(form, "Downsampling", "strided")
    choose_radio(form, "Preset", "cpu")
    field_input(form, "Epochs").fill("1")
    field_input(form, "Learning rate").fill("0.002")
    field_input(form, "Batch size").fill("4")
    choose_radio(form, "Device", "cpu")
    choose_radio(form, "Precision", "fp32")
    choose_radio(form, "Data", "streamed")
    field_input(form, "Run name").fill("form_late")
    wait_for_form_params(page, "train_fusion", family="late", fusion="mul", downsample="strided", preset="cpu",
                         epochs=1, lr=0.002, batch_size=4, device="cpu", precision="fp32", data="streamed",
                         name="form_late")
    screenshot_form(page, "train_fusion")
    operation = schedule(page, form, server, "train_fusion")
    assert queued_params(operation)["family"] == "late"
    done = run_queue(operation, "train_fusion")
    assert done.result.result["run"] == "form_late"
    dataset.reload()
    manifest = load_run(registry.recorded_runs(dataset)["form_late"]).manifest
    assert {k: manifest["model"][k] for k in ("family", "fusion", "downsample")} == \
        {"family": "late", "fusion": "mul", "downsample": "strided"}
    assert {k: manifest["train"][k] for k in ("epochs", "lr", "batch_size", "device", "precision")} == \
        {"epochs": 1, "lr": 0.002, "batch_size": 4, "device": "cpu", "precision": "fp32"}
    assert manifest["epochs_completed"] == 1 and manifest["data"]["mode"] == "streamed"


STAGE_LABELS = {"lidar": "lidar: the LiDAR classifier", "cilp": "cilp: contrastive RGB-LiDAR pre-training",
                "projector": "projector: RGB embedding -> LiDAR embedding",
                "rgb2lidar": "rgb2lidar: the RGB -> LiDAR classifier"}


def train_cilp(page, server, make_dataset, runs_dir):
    dataset = make_dataset("cilp")
    open_dataset(page, server, dataset)
    form = open_form(page, server, "train_cilp", "Train the CILP stages")
    check_classes_shown(form)
    for stage in ("projector", "rgb2lidar"):
        set_checkbox(form, STAGE_LABELS[stage], False)
    field_input(form, "Epochs of every stage").fill("1")
    field_input(form, "Batch size of every stage").fill("4")
    choose_radio(form, "Preset", "cpu")
    choose_radio(form, "Device", "cpu")
    choose_radio(form, "Precision", "fp32")
    choose_radio(form, "Data", "streamed")
    field_input(form, "Run name prefix").fill("form_")
    wait_for_form_params(page, "train_cilp", stage_projector=False, stage_rgb2lidar=False, epochs=1,
                         batch_size=4, preset="cpu", device="cpu", precision="fp32", data="streamed",
                         run_prefix="form_")
    screenshot_form(page, "train_cilp")
    operation = schedule(page, form, server, "train_cilp")
    params = queued_params(operation)
    assert [params.get(f"stage_{s}", True) for s in STAGE_LABELS] == [True, True, False, False], params
    done = run_queue(operation, "train_cilp")
    assert done.result.result["runs"] == {"lidar": "form_lidar", "cilp": "form_cilp"}, done.result.result
    dataset.reload()
    recorded = registry.recorded_runs(dataset)
    assert sorted(recorded) == ["form_cilp", "form_lidar"]
    for name in recorded:
        manifest = load_run(recorded[name]).manifest
        assert manifest["epochs_completed"] == 1, (name, manifest["epochs_completed"])
        assert manifest["train"]["batch_size"] == 4 and manifest["data"]["mode"] == "streamed", name
        assert Path(recorded[name]).is_relative_to(runs_dir)


def apply_model(page, server, make_dataset, runs_dir):
    from mm_models import ModelConfig
    from mm_models.presets import train_config

    dataset = make_dataset("apply")
    training.train_on_dataset(dataset, ModelConfig(family="late"), train_config(
        "fusion", "cpu", epochs=1, batch_size=4, device="cpu", precision="fp32"), name="late_run")
    val_pairs = sorted(dataset.select_group_slices("rgb").match_tags("val").values("pair_id"))
    open_dataset(page, server, dataset)
    form = open_form(page, server, "apply_model", "Apply a trained model")
    check_classes_shown(form)
    assert form.get_by_role("radio", name="A run of this dataset").is_checked()
    assert "added yet" not in form.inner_text(), "a list field reads 'No ... added yet'"
    field_input(form, "Prediction field").fill("form_pred")
    tags = form.locator('xpath=.//p[normalize-space(.)="Only pairs tagged"]/following::*[@role="combobox"][1]')
    tags.click()
    offered = sorted(page.get_by_role("option").all_inner_texts())
    assert offered == ["train", "val"], f"the tags offered: {offered}"
    page.get_by_role("option", name="val", exact=True).click()
    page.keyboard.press("Tab")  # closes the list (Escape would close the whole form)
    page.get_by_role("listbox").wait_for(state="hidden")
    choose_radio(form, "Embedding map", "none")
    choose_radio(form, "Device", "cpu")
    wait_for_form_params(page, "apply_model", run="late_run", field="form_pred", tags=["val"],
                         embedding_map="none", device="cpu")
    check_form(page, form, server, "apply_model")
    screenshot_form(page, "apply_model")
    result = run_operator(page, form, server, output=True)
    assert f"for {len(val_pairs)} pairs" in result, result
    dataset.reload()
    predicted = views.all_slices(dataset).exists("form_pred")
    assert sorted(set(predicted.values("pair_id"))) == val_pairs and len(predicted) == 3 * len(val_pairs)
    assert "form_pred_map" not in dataset.list_brain_runs()  # embedding map: none
    page.get_by_test_id("sidebar-field-form_pred").wait_for(timeout=SHOW_TIMEOUT * 1000)  # shown, no reload


def find_cross_modal_matches(page, server, make_dataset, runs_dir):

    dataset = make_dataset("matches")
    writeback.apply_run(dataset, registry.shipped_checkpoint("cilp"), embedding_map="pca")
    query_pair, k = "sphere_0001", 3
    query_id = dataset.select_group_slices("rgb").match({"pair_id": query_pair}).first().id
    expected = writeback.find_cross_modal_matches(dataset, [query_id], k=k).values("pair_id")
    open_dataset(page, server, dataset)
    show_field_on_tiles(page, "pair_id")
    wait_for_tiles(page, server, lambda shown: None if len(shown) == len(CLASSES) * N_PER_CLASS
                   and all("pair_id" in t for t in shown) else f"{len(shown)} tiles", "pair ids on the tiles")
    tile = page.get_by_test_id("looker").filter(has=page.get_by_test_id("tag-pair_id").get_by_text(
        query_pair, exact=True))
    tile.hover()
    tile.get_by_test_id("looker-checkbox-").click()
    form = open_form(page, server, "find_cross_modal_matches", "Find cross-modal matches")
    field_input(form, "Matches to show").fill(str(k))
    wait_for_form_params(page, "find_cross_modal_matches", k=k, run="cilp")
    screenshot_form(page, "find_cross_modal_matches")
    run_operator(page, form, server, output=False)
    assert executed(page, "find_cross_modal_matches")["params"] == {"k": k, "run": "cilp"}

    def matches_shown(shown):
        got = [t.get("pair_id", ["?"])[0] for t in shown]
        return None if got == expected else f"the grid shows {got}, expected {expected} in this order"

    wait_for_tiles(page, server, matches_shown, "the matches")


SCENARIOS = {f.__name__: f for f in (load_rgb_lidar_dataset, create_splits, train_fusion, train_cilp, apply_model,
                                     find_cross_modal_matches)}


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("operator", OPERATORS)
def test_every_form_opens_fills_and_runs(operator, make_dataset, app_server, app_page, runs_dir):
    """The form of ``operator`` (each operator listed in fiftyone.yml) shows no error, takes non-default
    values, and the run they start uses them."""
    assert operator in SCENARIOS, f"{operator} is listed in fiftyone.yml but has no form test here"
    try:
        SCENARIOS[operator](app_page, app_server, make_dataset, runs_dir)
    except BaseException:
        screenshot_form(app_page, f"{operator}_failed")
        raise
    finally:
        if app_page.page_errors:
            pytest.fail(f"the page raised {app_page.page_errors}")


def tag_colours(page, field: str) -> dict[str, str]:
    """The background colour (``rgb(r, g, b)``) of each value of ``field`` on the tiles' tags."""
    return dict(page.evaluate("""field => Array.from(document.querySelectorAll(`[data-cy="tag-${field}"]`),
        e => [e.innerText.trim(), getComputedStyle(e).backgroundColor])""", field))


def css_rgb(colour: str) -> str:
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def test_the_grid_shows_each_class_in_its_colour(make_dataset, app_server, app_page):
    """The tiles' class tags take the colours the report's pictures give the classes."""
    open_dataset(app_page, app_server, make_dataset("colours"))
    show_field_on_tiles(app_page, "ground_truth")
    wait_for_tiles(app_page, app_server, lambda shown: None if len(shown) == len(CLASSES) * N_PER_CLASS and all(
        "ground_truth" in t for t in shown) else f"{len(shown)} tiles", "the classes on the tiles")
    expected = {name: css_rgb(colour) for name, colour in class_colours(list(CLASSES)).items()}
    deadline = time.monotonic() + SHOW_TIMEOUT
    while tag_colours(app_page, "ground_truth") != expected and time.monotonic() < deadline:
        app_page.wait_for_timeout(250)
    assert tag_colours(app_page, "ground_truth") == expected
    app_page.screenshot(path=artifacts_dir() / "app_form_grid_colours.png")
