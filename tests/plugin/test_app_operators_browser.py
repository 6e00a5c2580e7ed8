"""End to end: the plugin's operators, run from their forms in the FiftyOne App as a person does.

One App server (``python -m fiftyone.server.main`` on 127.0.0.1, against the test's private
database) and one headless Chromium serve the whole module; each test works on its own
copy of a small ingested dataset (12 rgb/depth/lidar groups), because the server keeps one
view and one panel layout per dataset. Each test opens the operator browser with the "`"
key, finds the operator by its "CILP:" label, fills its form, runs it (immediate
execution) and checks what the App then shows, and what the dataset holds:

* ``create_splits``: the train / val tags in the sidebar's sample-tags filter and on the
  tiles, the split the form's fraction and seed give, and the exported split file;
* ``apply_model`` with a shipped checkpoint: the prediction field in the sidebar's labels,
  the predictions on the tiles, the evaluation in the Model Evaluation panel;
* ``find_cross_modal_matches`` on a selected RGB image: the LiDAR point clouds nearest in
  CILP's shared space, in the order the Python API gives;
* FiftyOne's Model Evaluation panel: one run's evaluation compared with another's, the
  grid showing the evaluated val pairs of the rgb slice, the metrics table matching the
  stored results.

A screenshot per test is kept in ``test-artifacts/`` (or ``$CILP_TEST_ARTIFACTS``):
``app_op_splits.png``, ``app_op_apply.png``, ``app_op_matches.png``, ``app_op_compare.png``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
import uuid

import pytest

from cilp_plugin import writeback
from cilp_plugin.data import synth
from cilp_plugin.dataset import ingest, splits, views
from cilp_plugin.runs import registry

from .app_browser import (
    AppServer,
    artifacts_dir,
    clear_screenshots,
    dismiss_popups,
    needs_chromium,
    running_app,
)

N_PER_CLASS = 6
PLUGIN = "@cilp/multimodal"
PLUGIN_OPERATORS = ("load_rgb_lidar_dataset", "create_splits", "train_fusion", "train_cilp", "apply_model",
                    "find_cross_modal_matches")
APP_TIMEOUT = 60_000  # ms, for the App to load a dataset on a busy 2-core machine
RUN_TIMEOUT = 120.0  # s, for an operator to run (apply_model loads torch in the server)
SHOW_TIMEOUT = 30.0  # s, for the App to show what an operator did

pytestmark = [pytest.mark.browser, needs_chromium]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _fresh_screenshots():
    clear_screenshots("app_op_")


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory):
    """12 groups (6 cubes, 6 spheres), ingested once; tests work on copies (``make_dataset``)."""
    lit = dataclasses.replace(synth.SceneConfig(), back_light=0.0)  # no all-black picture, so no blank_rgb tag
    root = synth.generate(tmp_path_factory.mktemp("app-ops") / "data", n_per_class=N_PER_CLASS, seed=3, workers=1,
                          config=lit)
    dataset = ingest.ingest(root, f"cilp-ops-{uuid.uuid4().hex[:8]}").dataset
    yield dataset
    dataset.delete()


@pytest.fixture(scope="module")
def make_dataset(base_dataset):
    """``make_dataset(what)``: a persistent copy of the base dataset, deleted at the end of the module."""
    made = []

    def make(what: str):
        dataset = base_dataset.clone(f"{base_dataset.name}-{what}", persistent=True)
        made.append(dataset)
        return dataset

    yield make
    for dataset in made:
        if not dataset.deleted:
            dataset.delete()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("app-server") / "app_server.log") as server:
        yield server


# --------------------------------------------------------------------------- helpers


def screenshot(page, what: str) -> None:
    page.screenshot(path=artifacts_dir() / f"app_op_{what}.png")


def problem_report(page, server: AppServer) -> str:
    # closed pages leave the server a "socket.send() raised exception." line per event: noise
    log = "\n".join(line for line in server.log_tail(20_000).splitlines() if "socket.send()" not in line)
    return f"page errors: {page.errors[-3:]}\nApp server log:\n{log[-2000:]}"


def open_dataset(page, server: AppServer, dataset) -> None:
    page.goto(f"{server.url}/datasets/{dataset.name}")
    page.get_by_test_id("looker").first.wait_for(timeout=APP_TIMEOUT)
    dismiss_popups(page)


def open_operator(page, label: str):
    """Open the operator browser with the "`" key, find ``label`` and open its form."""
    dismiss_popups(page)
    page.keyboard.press("`")
    listing = page.get_by_test_id("operators-browser")
    listing.wait_for()
    page.get_by_test_id("operators-browser-search").fill(label)
    listing.get_by_text(label, exact=True).click()
    form = page.get_by_test_id("operators-prompt-modal")
    form.wait_for()
    return form


def field_input(form, label: str):
    """The input of the form field labelled ``label``."""
    return form.locator(f'xpath=.//p[normalize-space(.)="{label}"]/following::input[1]')


def _calls(page, route: str, operator: str) -> list[dict]:
    return [body for name, body in page.operator_calls
            if name == route and body and body.get("operator_uri") == f"{PLUGIN}/{operator}"]


def wait_for_form_params(page, operator: str, **params) -> None:
    """Wait until the form has sent ``params`` to the server (it resolves its inputs again after
    each change), so that Execute runs with them."""
    deadline = time.monotonic() + SHOW_TIMEOUT
    while time.monotonic() < deadline:
        for body in _calls(page, "resolve-type", operator):
            if body.get("target") == "inputs" and params.items() <= body["params"].items():
                return
        page.wait_for_timeout(100)
    sent = [body["params"] for body in _calls(page, "resolve-type", operator)]
    pytest.fail(f"the {operator} form never sent {params}; it sent {sent[-3:]}")


def executed(page, operator: str) -> dict:
    """The body of the last request that ran ``operator``."""
    runs = _calls(page, "execute", operator)
    assert runs, f"the App never asked the server to run {operator}"
    return runs[-1]


def run_operator(page, form, server: AppServer, *, output: bool) -> str:
    """Press Execute; wait for the result (``output``) or for the form to close; the result's text."""
    form.get_by_role("button", name="Execute", exact=True).click()
    close = form.get_by_role("button", name="Close", exact=True)
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        text = form.inner_text() if form.count() else ""
        if "Error occurred" in text:
            pytest.fail(f"the operator failed in the App: {text}\n{problem_report(page, server)}")
        if output and close.count() and close.is_visible() and "Result" in text:  # the output view, resolved
            return text
        if not output and not form.count():
            return ""
        page.wait_for_timeout(250)
    pytest.fail(f"the operator did not finish within {RUN_TIMEOUT:.0f} s; the form shows {text!r}\n"
                f"{problem_report(page, server)}")


def close_result(form) -> None:
    form.get_by_role("button", name="Close", exact=True).click()
    form.wait_for(state="hidden")


def tiles(page) -> list[dict[str, list[str]]]:
    """The grid's tiles in reading order, each as ``{field: [texts of its pills]}`` (``tags``: the sample tags)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('[data-cy="looker"]'), tile => {
        const r = tile.getBoundingClientRect();
        const tags = {};
        tile.querySelectorAll('[data-cy^="tag-"]').forEach(e => {
            // tag-<field> for a field's pill; a sample tag's is tag-tags-<tag>, or tag-<tag> when the
            // dataset's colour scheme colours by value (the classes' colours)
            const id = e.getAttribute('data-cy').slice(4);
            const key = id.startsWith('tags-') || id === e.innerText.trim() ? 'tags' : id;
            (tags[key] = tags[key] || []).push(e.innerText.trim());
        });
        return {top: Math.round(r.top), left: r.left, width: r.width, height: r.height, tags};
    }).filter(t => t.width > 20 && t.height > 20)
      .sort((a, b) => a.top - b.top || a.left - b.left).map(t => t.tags)""")


def wait_for_tiles(page, server: AppServer, check, what: str) -> list[dict[str, list[str]]]:
    """Poll the tiles until ``check(tiles)`` holds (returns None) or fail with its last complaint."""
    deadline = time.monotonic() + SHOW_TIMEOUT
    while True:
        shown = tiles(page)
        complaint = check(shown)
        if complaint is None:
            return shown
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {complaint} after {SHOW_TIMEOUT:.0f} s\n{problem_report(page, server)}")
        page.wait_for_timeout(250)


def wait_until(page, server: AppServer, read, wanted, what: str):
    """Poll ``read()`` until it equals ``wanted`` (the App updates asynchronously); fail with the last value."""
    deadline = time.monotonic() + SHOW_TIMEOUT
    while True:
        value = read()
        if value == wanted:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: the App shows {value!r}, expected {wanted!r} after {SHOW_TIMEOUT:.0f} s\n"
                        f"{problem_report(page, server)}")
        page.wait_for_timeout(250)


def options_offered(page) -> list[str]:
    """The entries of the open dropdown."""
    page.get_by_role("option").first.wait_for()
    return page.get_by_role("option").all_inner_texts()


def show_field_on_tiles(page, path: str) -> None:
    """Tick a sidebar field so that the tiles show it."""
    box = page.get_by_test_id(f"checkbox-{path}")
    box.scroll_into_view_if_needed()
    if box.locator("input").count() and box.locator("input").is_checked():
        return
    box.click()


def samples_count(page) -> str:
    """The grid's "<n> samples" line."""
    return page.get_by_text(re.compile(r"^\d+ samples?$")).first.inner_text()


def wait_for_samples_count(page, server: AppServer, count: int) -> None:
    wait_until(page, server, lambda: samples_count(page), f"{count} samples", "the grid's sample count")


# --------------------------------------------------------------------------- the tests


def test_operator_browser_create_splits(make_dataset, app_server, page, tmp_path):
    """The form's fraction and seed make the split: tags in the sidebar, on the tiles, in the file."""
    dataset = make_dataset("splits")
    assert not dataset.count_sample_tags()
    wanted = splits.make_split(splits.pair_ids(dataset), val=0.5, seed=7)
    default = splits.make_split(splits.pair_ids(dataset))
    assert sorted(wanted.val) != sorted(default.val), "the chosen fraction must give another split than the default"
    export = tmp_path / "split.json"

    open_dataset(page, app_server, dataset)
    try:
        page.keyboard.press("`")
        listing = page.get_by_test_id("operators-browser")
        listing.wait_for()
        page.get_by_test_id("operators-browser-search").fill("CILP:")

        def listed():  # each entry reads "<label>\n<name>"
            lines = [line.strip() for line in listing.inner_text().splitlines() if line.strip()]
            return sorted(name for label, name in itertools.pairwise(lines) if label.startswith("CILP:"))

        wait_until(page, app_server, listed, sorted(PLUGIN_OPERATORS), "the plugin's operators, labelled 'CILP:'")
        icons = listing.locator("img")  # the plugin's icon, beside each of its operators
        loaded = "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"
        wait_until(page, app_server, lambda: icons.evaluate_all(loaded), [True] * len(PLUGIN_OPERATORS),
                   "the plugin's icons, loaded")
        listing.get_by_text("CILP: create train/val/test splits", exact=True).click()
        form = page.get_by_test_id("operators-prompt-modal")
        form.wait_for()
        form.get_by_text("Create splits", exact=True).wait_for()  # the form, once resolved

        val = field_input(form, "Validation fraction")
        assert val.input_value() == "0.2", "the form shows the default validation fraction"
        val.fill("0.5")
        field_input(form, "Seed").fill("7")
        field_input(form, "Export the split to (optional)").fill(str(export))
        wait_for_form_params(page, "create_splits", val=0.5, seed=7, to_json=str(export))
        result = run_operator(page, form, app_server, output=True)
        assert executed(page, "create_splits")["params"] == {
            "val": 0.5, "test": 0, "subset": 1, "seed": 7, "stratify": True, "to_json": str(export)}
        counts = wanted.counts()
        assert f"split: {counts['train']} train, {counts['val']} val pairs (seed 7" in result, result
        close_result(form)

        # the sidebar's sample-tags filter offers the new tags
        page.get_by_test_id("sidebar-field-arrow-enabled-tags").click()
        page.get_by_test_id("selector-sidebar-search-tags").click()
        offered = page.get_by_test_id("selector-results-container-sidebar-search-tags")
        offered.wait_for()
        wait_until(page, app_server, lambda: sorted(offered.inner_text().split()), ["train", "val"],
                   "the sample-tags filter")
        page.keyboard.press("Escape")

        # each tile shows its pair's split tag
        show_field_on_tiles(page, "tags")
        show_field_on_tiles(page, "pair_id")
        expected = {pid: "train" for pid in wanted.train} | {pid: "val" for pid in wanted.val}

        def tags_shown(shown):
            got = {t.get("pair_id", ["?"])[0]: t.get("tags", []) for t in shown}
            if got != {pid: [tag] for pid, tag in expected.items()}:
                return f"the tiles show {got}"
            return None

        wait_for_tiles(page, app_server, tags_shown, "split tags on the tiles")
    finally:
        screenshot(page, "splits")

    dataset.reload()
    tagged = splits.read_split(dataset)
    assert (sorted(tagged.train), sorted(tagged.val)) == (sorted(wanted.train), sorted(wanted.val))
    for name in ("depth", "lidar"):  # every slice of a pair carries the pair's tag
        view = dataset.select_group_slices(name)
        assert dict(zip(view.values("pair_id"), (t for t in view.values("tags")))) == \
            {pid: [tag] for pid, tag in expected.items()}, f"slice {name}"
    written = json.loads(export.read_text())
    assert (sorted(written["train"]), sorted(written["val"]), written["seed"]) == \
        (sorted(wanted.train), sorted(wanted.val), 7)


def test_apply_model_with_a_shipped_checkpoint(make_dataset, app_server, page):
    """The radio and the dropdown pick a shipped checkpoint; its predictions and evaluation appear."""
    dataset = make_dataset("apply")
    splits.create_splits(dataset, val=0.25, seed=0)
    val_pairs = len(dataset.select_group_slices("rgb").match_tags("val"))
    assert "intermediate_add" in registry.shipped_checkpoints()
    assert not dataset.has_sample_field("intermediate_add")

    open_dataset(page, app_server, dataset)
    try:
        form = open_operator(page, "CILP: apply a trained model")
        form.get_by_text("Shipped checkpoint", exact=True).wait_for()  # the form, resolved
        shipped = form.get_by_role("radio", name="A shipped checkpoint")
        own_run = form.get_by_role("radio", name="A run of this dataset")
        assert shipped.is_checked(), "a dataset without runs offers the shipped checkpoints first"
        own_run.check()  # the form changes with the choice
        form.get_by_text("Run", exact=True).wait_for()
        assert not form.get_by_text("Shipped checkpoint", exact=True).count()
        shipped.check()
        form.get_by_text("Shipped checkpoint", exact=True).wait_for()
        checkpoints = form.locator(  # the form's first dropdown; "Only pairs tagged" is another
            'xpath=.//p[normalize-space(.)="Shipped checkpoint"]/following::*[@role="combobox"][1]')
        checkpoints.click()
        options = options_offered(page)
        assert sorted(options) == registry.shipped_checkpoints(writeback.APPLICABLE_KINDS), \
            f"the dropdown offers {options}"
        page.get_by_role("option", name="intermediate_add", exact=True).click()
        assert checkpoints.inner_text() == "intermediate_add"
        assert field_input(form, "Evaluate on pairs tagged").input_value() == "val"
        wait_for_form_params(page, "apply_model", source="checkpoint", checkpoint="intermediate_add")

        result = run_operator(page, form, app_server, output=True)
        params = executed(page, "apply_model")["params"]
        assert (params["source"], params["checkpoint"], params["eval_tag"]) == ("checkpoint", "intermediate_add", "val")
        found = re.search(r"evaluation 'eval_intermediate_add': accuracy ([\d.]+)% on (\d+) pairs", result)
        assert found, f"the result reads {result!r}"
        assert int(found.group(2)) == val_pairs
        assert "wrote 'intermediate_add' and 'intermediate_add_embedding' for 12 pairs" in result, result
        close_result(form)

        # the sidebar lists the new label field among the labels, and the evaluation's field
        field = page.get_by_test_id("sidebar-field-intermediate_add")
        field.wait_for(timeout=SHOW_TIMEOUT * 1000)
        page.get_by_test_id("sidebar-field-eval_intermediate_add").wait_for()
        tops = [page.get_by_test_id(cy).bounding_box()["y"] for cy in (
            "sidebar-group-entry-LABELS", "sidebar-field-intermediate_add", "sidebar-group-entry-PRIMITIVES")]
        assert tops == sorted(tops), "'intermediate_add' is not listed under LABELS"

        # each tile shows the prediction the dataset holds for its pair
        dataset.reload()
        rgb = dataset.select_group_slices("rgb")
        predicted = dict(zip(rgb.values("pair_id"), rgb.values("intermediate_add.label")))
        show_field_on_tiles(page, "intermediate_add")
        show_field_on_tiles(page, "pair_id")

        def predictions_shown(shown):
            got = {t.get("pair_id", ["?"])[0]: t.get("intermediate_add") for t in shown}
            if got != {pid: [label] for pid, label in predicted.items()}:
                return f"the tiles show {got}, the dataset holds {predicted}"
            return None

        wait_for_tiles(page, app_server, predictions_shown, "predictions on the tiles")

        # the evaluation is listed in the Model Evaluation panel
        page.get_by_test_id("new-panel-btn").first.click()
        page.get_by_test_id("new-panel-option-model_evaluation_panel_builtin").click()
        panel = page.get_by_test_id("panel-content-model_evaluation_panel_builtin")
        panel.get_by_text("eval_intermediate_add", exact=True).wait_for(timeout=SHOW_TIMEOUT * 1000)
        assert panel.get_by_text(re.compile(r"^1 Model Evaluations?$")).count(), panel.inner_text()
    finally:
        screenshot(page, "apply")

    assert all(v is not None for v in dataset.select_group_slices(_allow_mixed=True).values("intermediate_add"))
    assert "eval_intermediate_add" in dataset.list_evaluations()
    assert "intermediate_add_map" in dataset.list_brain_runs()
    report = dataset.load_evaluation_results("eval_intermediate_add").report()
    assert int(report["macro avg"]["support"]) == val_pairs
    assert abs(100 * report["accuracy"] - float(found.group(1))) < 0.01
    labels = rgb.match_tags("val").values("ground_truth.label")
    hits = [p == t for p, t in zip(rgb.match_tags("val").values("intermediate_add.label"), labels)]
    assert abs(report["accuracy"] - sum(hits) / len(hits)) < 1e-9


def test_find_cross_modal_matches_for_a_selected_image(make_dataset, app_server, page):
    """A selected RGB image turns the grid into the LiDAR point clouds nearest to it in CILP's space."""
    dataset = make_dataset("matches")
    writeback.apply_run(dataset, registry.shipped_checkpoint("cilp"))
    rgb = dataset.select_group_slices("rgb")
    query_pair = "sphere_0002"
    query_id = rgb.match({"pair_id": query_pair}).first().id
    k = 4
    expected = writeback.find_cross_modal_matches(dataset, [query_id], k=k).values("pair_id")
    assert len(set(expected)) == k
    lidar = dataset.select_group_slices("lidar")
    thumbnails = dict(zip(lidar.values("pair_id"), lidar.values("orthographic_projection_metadata.filepath")))

    open_dataset(page, app_server, dataset)
    try:
        # without a selection the form says so and cannot run
        form = open_operator(page, "CILP: find cross-modal matches")
        form.get_by_text("Select samples first", exact=True).wait_for()
        assert form.get_by_role("button", name="Execute", exact=True).is_disabled()
        form.get_by_role("button", name="Cancel", exact=True).click()
        form.wait_for(state="hidden")

        # select the query image in the grid, as a person does: hover, tick its box
        show_field_on_tiles(page, "pair_id")
        wait_for_tiles(page, app_server, lambda shown: None if len(shown) == 2 * N_PER_CLASS
                       and all("pair_id" in t for t in shown) else f"{len(shown)} tiles", "pair ids on the tiles")
        tile = page.get_by_test_id("looker").filter(has=page.get_by_test_id("tag-pair_id").get_by_text(
            query_pair, exact=True))
        tile.hover()
        tile.get_by_test_id("looker-checkbox-").click()
        page.get_by_test_id("selection-count-container").get_by_text("1", exact=True).wait_for()

        form = open_operator(page, "CILP: find cross-modal matches")
        assert field_input(form, "Matches to show").input_value() == "5"  # waits for the form
        assert not form.get_by_text("Select samples first", exact=True).count()
        assert field_input(form, "CILP run").input_value() == "cilp"
        page.media.clear()
        field_input(form, "Matches to show").fill(str(k))
        wait_for_form_params(page, "find_cross_modal_matches", k=k)
        run_operator(page, form, app_server, output=False)
        call = executed(page, "find_cross_modal_matches")
        assert (call["selected"], call["params"]) == ([query_id], {"k": k, "run": "cilp"}), call

        def matches_shown(shown):
            got = [t.get("pair_id", ["?"])[0] for t in shown]
            return None if got == expected else f"the grid shows {got}, expected {expected} in this order"

        wait_for_tiles(page, app_server, matches_shown, "the matches")
        wait_for_samples_count(page, app_server, k)
        stages = page.get_by_test_id("view-bar").evaluate("e => e.textContent")
        assert "SelectGroupSlices" in stages and "lidar" in stages and "SortBySimilarity" in stages, stages

        def thumbnails_missing():  # a tile's pills show before its picture arrives
            fetched = {path for status, path in page.media if status == 200}
            return [pid for pid in expected if thumbnails[pid] not in fetched]

        wait_until(page, app_server, thumbnails_missing, [], "the matched point clouds' thumbnails not fetched")
    finally:
        screenshot(page, "matches")


def test_model_evaluation_panel_compares_two_runs(make_dataset, app_server, page):
    """The panel shows a run's evaluation on the val pairs of the rgb slice beside another run's."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    dataset = make_dataset("compare")
    splits.create_splits(dataset, val=0.34, seed=0)
    rgb_val = dataset.select_group_slices("rgb").match_tags("val")
    writeback.apply_run(dataset, registry.shipped_checkpoint("intermediate_add"))
    # the shipped models are right on every pair of this data: evaluate 'late' while one val pair
    # carries the wrong label, so that the two columns differ and cannot be mistaken for each other
    relabelled = rgb_val.first().pair_id
    pair = views.all_slices(dataset).match({"pair_id": relabelled})
    truth = pair.first().ground_truth.label
    pair.set_values("ground_truth.label", ["sphere" if truth == "cube" else "cube"] * len(pair))
    writeback.apply_run(dataset, registry.shipped_checkpoint("late"))
    pair.set_values("ground_truth.label", [truth] * len(pair))

    expected = {}
    for key in ("eval_intermediate_add", "eval_late"):
        results = dataset.load_evaluation_results(key)
        metrics = results.metrics()
        correct = int((results.ypred == results.ytrue).sum())
        expected[key] = {"Support": metrics["support"], "Accuracy": metrics["accuracy"],
                         "Precision": metrics["precision"], "Recall": metrics["recall"],
                         "F1-Score": metrics["fscore"], "Correct": correct,
                         "Incorrect": len(results.ytrue) - correct}
    assert expected["eval_intermediate_add"]["Accuracy"] != expected["eval_late"]["Accuracy"]
    assert expected["eval_late"]["Support"] == len(rgb_val)

    open_dataset(page, app_server, dataset)
    try:
        page.get_by_test_id("new-panel-btn").first.click()
        page.get_by_test_id("new-panel-option-model_evaluation_panel_builtin").click()
        panel = page.get_by_test_id("panel-content-model_evaluation_panel_builtin")
        panel.get_by_text("2 Model Evaluations").wait_for(timeout=SHOW_TIMEOUT * 1000)
        assert panel.get_by_text("eval_late", exact=True).count()
        listing = panel.get_by_text("2 Model Evaluations")
        for _ in range(3):  # a click while the panel is still setting itself up can be lost: click again
            panel.get_by_text("eval_intermediate_add", exact=True).click()
            try:
                listing.wait_for(state="hidden", timeout=10_000)
                break
            except PlaywrightTimeout:
                continue
        assert not listing.is_visible(), "clicking the evaluation did not open it"

        # the grid shows what was evaluated: the val pairs of the rgb slice
        wait_for_samples_count(page, app_server, len(rgb_val))
        stages = page.get_by_test_id("view-bar").evaluate("e => e.textContent")
        assert "SelectGroupSlices" in stages and "rgb" in stages and "MatchTags" in stages and "val" in stages, stages

        compare = panel.get_by_text("Select a comparison", exact=True)
        compare.wait_for(timeout=SHOW_TIMEOUT * 1000)  # the panel reloads once the grid shows the new view
        compare.click()
        offered = options_offered(page)
        assert offered == ["eval_late"], f"the comparison list offers {offered}"
        page.get_by_role("option").filter(has_text="eval_late").click()

        table = panel.locator("table").first

        def number(text: str) -> float:
            first = text.split()[0] if text.split() else ""
            return 0.0 if first in ("—", "-") else float(first)  # the panel shows a zero as a dash

        def summary_problem(head, rows) -> str | None:
            """What the summary table shows wrong (it fills in as the two evaluations load)."""
            if head[:3] != ["Metric", "eval_intermediate_add", "eval_late"]:
                return f"the summary's columns are {head}"
            shown = {row[0]: row[1:4] for row in rows}
            for metric in expected["eval_intermediate_add"]:
                if len(shown.get(metric, [])) != 3:
                    return f"the summary lacks {metric}: {rows}"
                ours, theirs, difference = shown[metric]
                for text, key in ((ours, "eval_intermediate_add"), (theirs, "eval_late")):
                    if abs(number(text) - expected[key][metric]) >= 0.0051:  # shown to 3 decimals
                        return f"{key} {metric}: the panel shows {text!r}, the results hold {expected[key][metric]}"
                if abs(number(difference) - (number(ours) - number(theirs))) >= 0.0021:
                    return f"{metric}: the difference column shows {difference!r} for {ours!r} vs {theirs!r}"
            # the better accuracy carries the panel's trophy
            better = expected["eval_intermediate_add"]["Accuracy"] > expected["eval_late"]["Accuracy"]
            if ("🏆" in shown["Accuracy"][0], "🏆" in shown["Accuracy"][1]) != (better, not better):
                return f"the trophy is on the wrong side of the accuracy row {shown['Accuracy']}"
            return None

        deadline = time.monotonic() + SHOW_TIMEOUT
        while True:
            head, rows = table.evaluate("""t => [
                Array.from(t.querySelectorAll('thead th'), e => e.innerText.trim()),
                Array.from(t.querySelectorAll('tbody tr'),
                           r => Array.from(r.querySelectorAll('td'), e => e.innerText.trim()))]""")
            problem = summary_problem(head, rows)
            if problem is None:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{problem} after {SHOW_TIMEOUT:.0f} s\n{problem_report(page, app_server)}")
            page.wait_for_timeout(250)
    finally:
        screenshot(page, "compare")
