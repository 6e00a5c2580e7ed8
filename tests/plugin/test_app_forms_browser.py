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

import json
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

from cilp_plugin import ingest, splits, synth, training, writeback
from mm_models import load_run

from .app_browser import REPO, AppServer, artifacts_dir, needs_chromium
from .test_app_operators_browser import (  # the helpers of the other operator tests
    PLUGIN,
    SHOW_TIMEOUT,
    browser,  # noqa: F401 - a fixture
    executed,
    field_input,
    open_dataset,
    open_operator,
    page,  # noqa: F401 - a fixture
    problem_report,
    run_operator,
    wait_for_form_params,
    wait_for_tiles,
    show_field_on_tiles,
)

N_PER_CLASS = 4
OPERATORS = yaml.safe_load((REPO / "fiftyone.yml").read_text())["operators"]
LABELS = {  # the label each operator is listed under in the App
    "load_rgb_lidar_dataset": "CILP: load RGB/LiDAR dataset",
    "create_splits": "CILP: create train/val/test splits",
    "train_fusion": "CILP: train a fusion model",
    "train_cilp": "CILP: train the cross-modal pipeline",
    "apply_model": "CILP: apply a trained model",
    "find_cross_modal_matches": "CILP: find cross-modal matches",
}
TESTED = set()  # the operators whose form a test ran (checked last)
QUEUE_TIMEOUT = 30.0  # s, for a scheduled operation to reach the queue

pytestmark = [pytest.mark.browser, needs_chromium]


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
    server = AppServer(tmp_path_factory.mktemp("forms-server") / "app_server.log",
                       env={"FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS": "true"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory):
    """8 groups (4 cubes, 4 spheres), split 4 train / 4 val; tests work on copies."""
    root = synth.generate(tmp_path_factory.mktemp("forms") / "data", n_per_class=N_PER_CLASS, seed=4, workers=1)
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
    TESTED.add(operator)
    return form


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
    assert done.run_state == ExecutionRunState.COMPLETED, f"{operator}: {done.run_state}: {done.run_state and done.result}"
    return done


def queued_params(operation) -> dict:
    return operation.context.request_params["params"]


# --------------------------------------------------------------------------- the tests


def test_train_cilp_form_trains_the_ticked_stages(make_dataset, app_server, app_page, runs_dir):
    page = app_page
    dataset = make_dataset("cilp")
    open_dataset(page, app_server, dataset)
    try:
        form = open_form(page, app_server, "train_cilp", "Train the CILP stages")
        for stage in ("projector", "rgb2lidar"):
            set_checkbox(form, f"{stage}: " + {"projector": "RGB embedding -> LiDAR embedding",
                                                "rgb2lidar": "the RGB -> LiDAR classifier"}[stage], False)
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
        check_form(page, form, app_server, "train_cilp")
        screenshot_form(page, "train_cilp")
        operation = schedule(page, form, app_server, "train_cilp")
    finally:
        screenshot_form(page, "train_cilp_scheduled")
    params = queued_params(operation)
    assert (params["stage_lidar"], params["stage_cilp"], params["stage_projector"], params["stage_rgb2lidar"]) == \
        (True, True, False, False), params
    done = run_queue(operation, "train_cilp")
    assert done.result.result["runs"] == {"lidar": "form_lidar", "cilp": "form_cilp"}, done.result.result
    dataset.reload()
    recorded = training.recorded_runs(dataset)
    assert sorted(recorded) == ["form_cilp", "form_lidar"]
    for name in recorded:
        manifest = load_run(recorded[name]).manifest
        assert manifest["epochs_completed"] == 1, (name, manifest["epochs_completed"])
        assert manifest["train"]["batch_size"] == 4 and manifest["data"]["mode"] == "streamed", name
        assert Path(recorded[name]).is_relative_to(runs_dir)
