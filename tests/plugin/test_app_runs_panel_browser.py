"""The plugin's "CILP runs" panel in the FiftyOne App: a dataset's runs, its scheduled operations,
a run's loss curves, its actions (apply, train further, open the evaluation), the fields of a
scheduled apply shown without a reload, and a CILP run's joint map whose selection sets the view.

Screenshots: ``test-artifacts/app_runs_panel.png``, ``app_runs_panel_joint_map.png``,
``app_runs_panel_evaluation.png``.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import fiftyone.operators as foo
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionProgress, ExecutionResult, ExecutionRunState

from cilp_plugin import cli
from cilp_plugin.data import synth
from cilp_plugin.dataset import ingest, splits
from cilp_plugin.runs import registry, training
from cilp_plugin.runs import table as run_table

from .app_browser import artifacts_dir, clear_screenshots, needs_chromium, running_app
from .test_app_operators_browser import (  # the helpers of the other operator tests
    PLUGIN,
    SHOW_TIMEOUT,
    field_input,
    open_dataset,
    problem_report,
    run_operator,
    show_field_on_tiles,
    wait_for_form_params,
    wait_for_tiles,
)

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module", autouse=True)
def _fresh_screenshots():
    clear_screenshots("app_runs_panel")


def dataset_with_runs(tmp_path, monkeypatch, runs: dict[str, tuple[str, int]]):
    """8 groups, split, with a run of each ``name: (family, epochs)``; persistent, for the App."""
    from mm_models import ModelConfig
    from mm_models.presets import train_config

    monkeypatch.setenv("CILP_RUNS_DIR", str(tmp_path / "runs"))
    root = synth.generate(tmp_path / "data", n_per_class=4, seed=6, workers=1)
    made = ingest.ingest(root, f"cilp-runs-panel-{uuid.uuid4().hex[:8]}").dataset
    made.persistent = True
    splits.create_splits(made, val=0.5, seed=0)
    for name, (family, epochs) in runs.items():
        training.train_on_dataset(made, ModelConfig(family=family), train_config(
            "fusion", "cpu", epochs=epochs, batch_size=4, device="cpu", precision="fp32"), name=name)
    return made


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A late-fusion run (2 epochs), a lidar run (1 epoch), a training scheduled (queued)."""
    made = dataset_with_runs(tmp_path, monkeypatch, {"late_two": ("late", 2), "lidar_one": ("lidar", 1)})
    with ThreadPoolExecutor(1) as thread:  # FiftyOne's asyncio.run, away from Playwright's loop in this thread
        queued = thread.submit(foo.execute_operator, f"{PLUGIN}/train_fusion",
                               ctx={"dataset": made, "params": {"epochs": 1}}, request_delegation=True).result()
    assert queued.delegated, queued.error
    assert [op.run_state for op in DelegatedOperationService().list_operations(dataset_name=made.name)] == ["queued"]
    yield made
    made.delete()


@pytest.fixture
def app_server(tmp_path):
    with running_app(tmp_path / "app_server.log") as server:
        yield server


def wait_for_text(panel, page, server, text: str) -> None:
    deadline = time.monotonic() + SHOW_TIMEOUT
    while text not in panel.inner_text():
        if time.monotonic() > deadline:
            pytest.fail(f"the panel never showed {text!r}: {panel.inner_text()[:1500]!r}\n"
                        f"{problem_report(page, server)}")
        page.wait_for_timeout(250)


def table_rows(table) -> list[list[str]]:
    """The texts of a table's body cells, row by row."""
    return table.evaluate("t => Array.from(t.querySelectorAll('tbody tr'), "
                          "r => Array.from(r.querySelectorAll('td'), d => d.innerText.trim()))")


def wait_for_rows(table, page, server, expected: list) -> None:
    """Wait until the table's rows begin with ``expected`` cells, with no click on Refresh."""
    deadline = time.monotonic() + SHOW_TIMEOUT
    rows = None
    while time.monotonic() < deadline:
        rows = table_rows(table)
        if [row[:len(want)] for row, want in zip(rows, expected)] == expected and len(rows) == len(expected):
            return
        page.wait_for_timeout(250)
    pytest.fail(f"the table shows {rows}, expected {expected}\n{problem_report(page, server)}")


def wait_for_plot(panel, page, server, expected: list) -> None:
    """Wait until the panel's plot shows ``expected`` traces ([name, x, y] each)."""
    deadline = time.monotonic() + SHOW_TIMEOUT
    plotted = None
    while time.monotonic() < deadline:
        plot = panel.locator(".js-plotly-plot")
        plotted = plot.evaluate("p => (p.data || []).map(t => [t.name, t.x, t.y])") if plot.count() else None
        if plotted == expected:
            return
        page.wait_for_timeout(250)
    pytest.fail(f"the plot shows {plotted}, expected {expected}\n{problem_report(page, server)}")


def choose_in(panel, page, label: str, value: str) -> None:
    """Pick ``value`` in the panel's dropdown labelled ``label``."""
    panel.locator(f'xpath=.//*[normalize-space(text())="{label}"]/following::*[@role="combobox"][1]').click()
    page.get_by_role("option", name=value, exact=True).click()


def open_runs_panel(page, server):
    """Open the "CILP runs" panel as a person does ("+", then its name); once it lists late_two."""
    page.get_by_test_id("new-panel-btn").first.click()
    page.get_by_test_id("new-panel-option-cilp_runs").click()
    panel = page.get_by_test_id("panel-content-cilp_runs")
    panel.wait_for(timeout=SHOW_TIMEOUT * 1000)
    wait_for_text(panel, page, server, "late_two")
    return panel


def test_runs_panel_lists_runs_operations_curves_and_applies_a_run(dataset, app_server, page):
    open_dataset(page, app_server, dataset)
    try:
        panel = open_runs_panel(page, app_server)
        assert "Dataset classes: 2 classes: cube, sphere — one logit (BCE)" in panel.inner_text()
        rows = table_rows(panel.locator("table").first)
        shown = {row[0]: (row[1:5], row[-4:]) for row in rows}
        assert shown == {
            "late_two": (["classifier", "cube, sphere", "finished", "2/2"], ["cpu", "fp32", "cpu", "resident"]),
            "lidar_one": (["classifier", "cube, sphere", "finished", "1/1"], ["cpu", "fp32", "cpu", "resident"])}, rows
        wait_for_text(panel, page, app_server, "queued")
        operations = table_rows(panel.locator("table").nth(1))
        assert [row[:2] for row in operations] == [["train_fusion", "queued"]], operations

        # the panel follows the operation on its own, as an executor would move it on
        service = DelegatedOperationService()
        operation = service.list_operations(dataset_name=dataset.name)[0]
        service.set_running(operation.id)
        service.set_progress(operation.id, ExecutionProgress(0.5, "late: epoch 1/2: val loss 0.5"))
        wait_for_rows(panel.locator("table").nth(1), page, app_server,
                      [["train_fusion", "running", "50.0%", "late: epoch 1/2: val loss 0.5"]])
        service.set_failed(operation.id, result=ExecutionResult(error="stopped by the test"))
        wait_for_rows(panel.locator("table").nth(1), page, app_server,
                      [["train_fusion", "failed", "50.0%", "late: epoch 1/2: val loss 0.5"]])

        # a newly scheduled operation appears on its own too (the panel refreshes while idle, more slowly)
        with ThreadPoolExecutor(1) as thread:
            thread.submit(foo.execute_operator, f"{PLUGIN}/train_fusion",
                          ctx={"dataset": dataset, "params": {"epochs": 1}}, request_delegation=True).result()
        wait_for_text(panel.locator("table").nth(1), page, app_server, "queued")
        folders = registry.recorded_runs(dataset)
        curves = run_table.run_curves(folders["lidar_one"])  # the last run by name is shown first
        wait_for_plot(panel, page, app_server, [[c["name"], c["x"], c["y"]] for c in curves])
        choose_in(panel, page, "Curves of", "late_two")
        wait_for_text(panel, page, app_server, "family late")  # the chosen run's config
        assert "epochs 2" in panel.inner_text(), panel.inner_text()
        curves = run_table.run_curves(folders["late_two"])
        assert [c["name"] for c in curves] == ["train/loss", "val/loss"] and curves[0]["x"] == [1, 2]
        wait_for_plot(panel, page, app_server, [[c["name"], c["x"], c["y"]] for c in curves])
        choose_in(panel, page, "Compare with (dashed)", "lidar_one")
        curves += run_table.run_curves(folders["lidar_one"], prefix="lidar_one: ")
        wait_for_plot(panel, page, app_server, [[c["name"], c["x"], c["y"]] for c in curves])
        page.screenshot(path=artifacts_dir() / "app_runs_panel.png")

        panel.get_by_role("button", name="Apply this run").click()
        form = page.get_by_test_id("operators-prompt-modal")
        form.get_by_text("Apply a trained model", exact=True).wait_for(timeout=SHOW_TIMEOUT * 1000)
        assert field_input(form, "Run").input_value() == "late_two"  # the run whose curves are shown
        failure = form.get_by_text("Error occurred during operator execution")
        try:
            run_operator(page, form, app_server, output=True)
        except BaseException:
            if failure.count():
                failure.click()  # unfolds the error's details
                pytest.fail(f"apply_model failed: {form.inner_text()[:3000]}")
            raise
        page.get_by_test_id("sidebar-field-late_two").wait_for(timeout=SHOW_TIMEOUT * 1000)
    finally:
        page.screenshot(path=artifacts_dir() / "app_runs_panel_after.png")
    dataset.reload()
    assert dataset.has_sample_field("late_two")


# --------------------------------------------------------------------------- actions and the joint map


@pytest.fixture
def cilp_dataset(tmp_path, monkeypatch):
    """A late-fusion run (2 epochs), the shipped CILP checkpoint applied."""
    made = dataset_with_runs(tmp_path, monkeypatch, {"late_two": ("late", 2)})
    assert cli.main(["apply", made.name, "--checkpoint", "cilp"]) == 0
    yield made
    made.delete()


@pytest.fixture
def scheduling_app_server(tmp_path):
    """The App server as ``cilp app`` starts it: "Schedule" offered."""
    with running_app(tmp_path / "app_server.log", env={"FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS": "true"}) as server:
        yield server


def schedule_and_run(page, form, server, operator: str, while_running=None) -> None:
    """Press the form's "Schedule", then run the queued operation here, as an executor would, calling
    ``while_running()`` meanwhile."""
    service = DelegatedOperationService()
    before = {op.id for op in service.list_operations(operator=f"{PLUGIN}/{operator}")}
    schedule = form.get_by_role("button", name="Schedule", exact=True)
    if not schedule.count():  # Execute first (apply_model): "Schedule" is in the button's menu
        form.get_by_role("button", name="Execute", exact=True).locator("xpath=following-sibling::button[1]").click()
        page.get_by_text("Run this operation in the background").click()
    schedule.click()
    deadline = time.monotonic() + SHOW_TIMEOUT
    while not (queued := [op for op in service.list_operations(operator=f"{PLUGIN}/{operator}")
                          if op.id not in before]):
        if time.monotonic() > deadline:
            pytest.fail(f"Schedule queued no {operator}\n{problem_report(page, server)}")
        page.wait_for_timeout(250)
    with ThreadPoolExecutor(1) as thread:  # FiftyOne's asyncio.run, away from Playwright's loop in this thread
        running = thread.submit(service.execute_queued_operations, operator=f"{PLUGIN}/{operator}")
        if while_running:
            while_running()
        running.result()
    done = service.get(queued[0].id)
    assert done.run_state == ExecutionRunState.COMPLETED, f"{operator}: {done.run_state}: {done.result}"


def joint_map_plot(panel):
    plot = panel.locator(".js-plotly-plot").filter(has=panel.page.locator(".scatterlayer, .gl-container")).last
    plot.wait_for(timeout=SHOW_TIMEOUT * 1000)
    return plot


def lasso(page, plot, fraction: float) -> set:
    """Draw a lasso, as a person does with the mouse, around the left ``fraction`` of the plot; the ids
    of the points plotly reports selected. They are caught as plotly reports them: the panel answers
    the selection by drawing the map again, which clears the plot's own record of it."""
    plot.evaluate("""p => { window.lassoed = [];
        p.on('plotly_selected', e => { if (e && e.points && e.points.length)
            window.lassoed = e.points.map(point => point.data.ids[point.pointIndex]); }); }""")
    plot.scroll_into_view_if_needed()
    box = plot.locator(".nsewdrag").first.bounding_box()
    left, top, right, bottom = box["x"] + 2, box["y"] + 2, box["x"] + fraction * box["width"], \
        box["y"] + box["height"] - 2
    page.mouse.move(left, top)
    page.mouse.down()
    for x, y in ((right, top), (right, bottom), (left, bottom), (left, top + 1)):
        page.mouse.move(x, y, steps=12)
    page.mouse.up()
    deadline = time.monotonic() + 5
    while not (chosen := page.evaluate("window.lassoed")) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    return set(chosen)


EPOCHS_FURTHER = 80  # ~0.2 s each on 4 pairs: the run lasts long enough for the panel to show it running


def test_runs_panel_actions_reload_and_the_joint_map(cilp_dataset, scheduling_app_server, page):
    dataset, server = cilp_dataset, scheduling_app_server
    open_dataset(page, server, dataset)
    try:
        panel = open_runs_panel(page, server)

        # the joint map: both modalities of the 8 pairs, coloured by class, marked by modality
        plot = joint_map_plot(panel)
        deadline = time.monotonic() + SHOW_TIMEOUT
        while not (traces := plot.evaluate("p => (p.data || []).map(t => [t.name, (t.ids || []).length])")):
            assert time.monotonic() < deadline, problem_report(page, server)
            page.wait_for_timeout(250)
        assert sorted(traces) == [["cube, LiDAR", 4], ["cube, RGB", 4], ["sphere, LiDAR", 4], ["sphere, RGB", 4]]
        chosen = set()
        for _ in range(3):  # on a busy machine a lasso drawn before the plot settled catches nothing: draw again
            if chosen := lasso(page, joint_map_plot(panel), 0.5):
                break
            page.wait_for_timeout(1000)
        assert chosen and len(chosen) < 8, f"the lasso chose {chosen}"
        show_field_on_tiles(page, "pair_id")
        wait_for_tiles(page, server, lambda shown: None if {t.get("pair_id", ["?"])[0] for t in shown} == chosen
                       and len(shown) == len(chosen) else f"tiles {shown}, expected the pairs {chosen}",
                       "the pairs chosen on the joint map")
        deadline = time.monotonic() + SHOW_TIMEOUT  # the chosen pairs' two points linked on the map
        while not plot.evaluate("p => p.data.some(t => t.name === 'selected pairs')"):
            assert time.monotonic() < deadline, f"no links drawn\n{problem_report(page, server)}"
            page.wait_for_timeout(250)
        page.screenshot(path=artifacts_dir() / "app_runs_panel_joint_map.png")

        # train further: the train_fusion form, filled for this run; scheduled, run, shown
        panel.get_by_role("button", name="Train it further").click()
        form = page.get_by_test_id("operators-prompt-modal")
        form.get_by_text("Train a fusion model", exact=True).wait_for(timeout=SHOW_TIMEOUT * 1000)
        assert field_input(form, "Run name").input_value() == "late_two"
        assert field_input(form, "Epochs").input_value() == "4"
        assert form.get_by_role("checkbox", name="Train a run of the same name further").is_checked()
        field_input(form, "Epochs").fill(str(EPOCHS_FURTHER))  # long enough to be watched while it runs
        wait_for_form_params(page, "train_fusion", epochs=EPOCHS_FURTHER, resume=True, name="late_two")

        def watch():  # the panel follows the run: running, with the epoch it reached
            wait_for_text(panel.locator("table").nth(1), page, server, "running")
            wait_for_text(panel.locator("table").nth(1), page, server, f"/{EPOCHS_FURTHER}")

        schedule_and_run(page, form, server, "train_fusion", while_running=watch)
        wait_for_rows(panel.locator("table").first, page, server,
                      [["late_two", "classifier", "cube, sphere", "finished", f"{EPOCHS_FURTHER}/{EPOCHS_FURTHER}"]])
        assert registry.recorded_runs(dataset)  # still recorded, now trained further
        # apply it, scheduled: its field appears in the sidebar with no reload of the page
        panel.get_by_role("button", name="Apply this run").click()
        form.get_by_text("Apply a trained model", exact=True).wait_for(timeout=SHOW_TIMEOUT * 1000)
        schedule_and_run(page, form, server, "apply_model")
        page.get_by_test_id("sidebar-field-late_two").wait_for(timeout=SHOW_TIMEOUT * 1000)

        # its evaluation, in FiftyOne's Model Evaluation panel
        panel.get_by_role("button", name="Open its evaluation").click()
        evaluation = page.get_by_test_id("panel-content-model_evaluation_panel_builtin")
        evaluation.get_by_text("eval_late_two").first.click()  # the run's evaluation, listed there
        evaluation.get_by_text("Accuracy").first.wait_for(timeout=SHOW_TIMEOUT * 1000)
        page.screenshot(path=artifacts_dir() / "app_runs_panel_evaluation.png")
    finally:
        page.screenshot(path=artifacts_dir() / "app_runs_panel_actions_after.png")
    from mm_models import load_run

    assert load_run(registry.recorded_runs(dataset)["late_two"]).manifest["epochs_completed"] == EPOCHS_FURTHER
