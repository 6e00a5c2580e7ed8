"""The plugin's "CILP runs" panel in the FiftyOne App: a dataset's runs, its scheduled operations,
a run's loss curves and the action that applies a run.

Screenshot: ``test-artifacts/app_runs_panel.png``.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import fiftyone.operators as foo
import pytest
from fiftyone.operators.delegated import DelegatedOperationService

from cilp_plugin import ingest, run_table, splits, synth, training

from .app_browser import AppServer, artifacts_dir, needs_chromium
from .test_app_operators_browser import (  # the helpers of the other operator tests
    PLUGIN,
    SHOW_TIMEOUT,
    browser,  # noqa: F401 - a fixture
    field_input,
    open_dataset,
    page,  # noqa: F401 - a fixture
    problem_report,
    run_operator,
)

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """8 groups, split, one late-fusion run trained 2 epochs and one training scheduled (queued)."""
    from mm_models import ModelConfig
    from mm_models.presets import train_config

    monkeypatch.setenv("CILP_RUNS_DIR", str(tmp_path / "runs"))
    root = synth.generate(tmp_path / "data", n_per_class=4, seed=6, workers=1)
    made = ingest.ingest(root, f"cilp-runs-panel-{uuid.uuid4().hex[:8]}").dataset
    made.persistent = True
    splits.create_splits(made, val=0.5, seed=0)
    training.train_on_dataset(made, ModelConfig(family="late"), train_config(
        "fusion", "cpu", epochs=2, batch_size=4, device="cpu", precision="fp32"), name="late_two")
    with ThreadPoolExecutor(1) as thread:  # FiftyOne's asyncio.run, away from Playwright's loop in this thread
        queued = thread.submit(foo.execute_operator, f"{PLUGIN}/train_fusion",
                               ctx={"dataset": made, "params": {"epochs": 1}}, request_delegation=True).result()
    assert queued.delegated, queued.error
    assert [op.run_state for op in DelegatedOperationService().list_operations(dataset_name=made.name)] == ["queued"]
    yield made
    made.delete()


@pytest.fixture
def app_server(tmp_path):
    server = AppServer(tmp_path / "app_server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def wait_for_text(panel, page, server, text: str) -> None:
    deadline = time.monotonic() + SHOW_TIMEOUT
    while text not in panel.inner_text():
        if time.monotonic() > deadline:
            pytest.fail(f"the panel never showed {text!r}: {panel.inner_text()[:1500]!r}\n{problem_report(page, server)}")
        page.wait_for_timeout(250)


def test_runs_panel_lists_runs_operations_curves_and_applies_a_run(dataset, app_server, page):
    open_dataset(page, app_server, dataset)
    try:
        page.get_by_test_id("new-panel-btn").first.click()
        page.get_by_test_id("new-panel-option-cilp_runs").click()
        panel = page.get_by_test_id("panel-content-cilp_runs")
        panel.wait_for(timeout=SHOW_TIMEOUT * 1000)
        wait_for_text(panel, page, app_server, "late_two")
        rows = panel.locator("table").first.evaluate(
            "t => Array.from(t.querySelectorAll('tbody tr'), r => Array.from(r.querySelectorAll('td'), d => d.innerText.trim()))")
        assert len(rows) == 1 and rows[0][:5] == ["late_two", "classifier", "finished", "2/2", rows[0][4]], rows
        assert rows[0][-3:] == ["cpu", "fp32", rows[0][-1]], rows
        wait_for_text(panel, page, app_server, "queued")
        operations = panel.locator("table").nth(1).evaluate(
            "t => Array.from(t.querySelectorAll('tbody tr'), r => Array.from(r.querySelectorAll('td'), d => d.innerText.trim()))")
        assert [row[:2] for row in operations] == [["train_fusion", "queued"]], operations
        traces = panel.locator(".js-plotly-plot .scatterlayer .trace")
        deadline = time.monotonic() + SHOW_TIMEOUT
        while traces.count() != 2 and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert traces.count() == 2, "the curves plot shows train and val loss"
        plotted = panel.locator(".js-plotly-plot").evaluate("plot => plot.data.map(t => [t.name, t.x, t.y])")
        curves = run_table.run_curves(training.recorded_runs(dataset)["late_two"])
        assert plotted == [[c["name"], c["x"], c["y"]] for c in curves] and [c["name"] for c in curves] == \
            ["train/loss", "val/loss"], plotted
        page.screenshot(path=artifacts_dir() / "app_runs_panel.png")

        panel.get_by_role("button", name="Apply this run").click()
        form = page.get_by_test_id("operators-prompt-modal")
        form.get_by_text("Apply a trained model", exact=True).wait_for(timeout=SHOW_TIMEOUT * 1000)
        assert field_input(form, "Run").input_value() == "late_two"
        run_operator(page, form, app_server, output=True)
        page.get_by_test_id("sidebar-field-late_two").wait_for(timeout=SHOW_TIMEOUT * 1000)
    finally:
        page.screenshot(path=artifacts_dir() / "app_runs_panel_after.png")
    dataset.reload()
    assert dataset.has_sample_field("late_two")
