"""Search that finds, in the FiftyOne App: what ``cilp apply DATASET --checkpoint cilp`` gives a person.

* The grid's similarity search, with the index it preselects, shows the nearest samples of the
  slice shown in their order, on every slice (the apply writes one index of all three slices;
  an index of another slice failed silently, with "Query IDs ... do not exist in this index"
  in the server log).
* The grid's "Sort by" offers the pair scores (indexed by the apply).
* ``find_cross_modal_matches`` shows its matches in their order while a grid sort is set.
* The Embeddings panel colours every point of every CILP map by class, on every slice.

Screenshots: ``test-artifacts/app_search_similar_<slice>.png``, ``app_search_sort_by.png``,
``app_search_matches_sorted.png``.
"""

from __future__ import annotations

import struct
import time
import uuid

import pytest

from cilp_plugin import cli, writeback
from cilp_plugin.data import synth
from cilp_plugin.dataset import ingest, splits

from .app_browser import artifacts_dir, clear_screenshots, needs_chromium, running_app
from .test_app_operators_browser import (  # the helpers of the other operator tests
    SHOW_TIMEOUT,
    field_input,
    open_dataset,
    open_operator,
    problem_report,
    run_operator,
    show_field_on_tiles,
    wait_for_form_params,
    wait_for_tiles,
)

N_PER_CLASS = 6

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module", autouse=True)
def _fresh_screenshots():
    clear_screenshots("app_search_")


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory):
    """12 groups with the shipped CILP checkpoint applied as the CLI does."""
    root = synth.generate(tmp_path_factory.mktemp("search") / "data", n_per_class=N_PER_CLASS, seed=3, workers=1)
    dataset = ingest.ingest(root, f"cilp-search-{uuid.uuid4().hex[:8]}").dataset
    splits.create_splits(dataset, val=0.5, seed=0)
    assert cli.main(["apply", dataset.name, "--checkpoint", "cilp"]) == 0
    yield dataset
    dataset.delete()


@pytest.fixture
def dataset(base_dataset, request):
    """A persistent copy per test, under a name of its own: the App server keeps a view, a sort and
    open panels per dataset name."""
    copy = base_dataset.clone(f"{base_dataset.name}-{uuid.uuid4().hex[:8]}", persistent=True)
    yield copy
    copy.delete()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("search-server") / "app_server.log") as server:
        yield server


def screenshot(page, what: str) -> None:
    page.screenshot(path=artifacts_dir() / f"app_search_{what}.png")


def select_slice(page, name: str) -> None:
    """Pick a slice in the grid's slice selector, as a user does."""
    page.get_by_test_id("selector-slice").click()
    page.get_by_test_id("selector-results-container").get_by_test_id(f"selector-result-{name}").click()
    page.get_by_test_id("looker").first.wait_for()


def select_tile(page, server, pair_id: str) -> None:
    """Tick the tile of ``pair_id`` as a person does (hover, its check box)."""
    show_field_on_tiles(page, "pair_id")
    wait_for_tiles(page, server, lambda shown: None if len(shown) == 2 * N_PER_CLASS
                   and all("pair_id" in t for t in shown) else f"{len(shown)} tiles", "pair ids on the tiles")
    tile = page.get_by_test_id("looker").filter(has=page.get_by_test_id("tag-pair_id").get_by_text(
        pair_id, exact=True))
    tile.hover()
    tile.get_by_test_id("looker-checkbox-").click()
    page.get_by_test_id("selection-count-container").get_by_text("1", exact=True).wait_for()


def pair_order(expected: list[str]):
    def check(shown):
        got = [t.get("pair_id", ["?"])[0] for t in shown]
        return None if got == expected else f"the grid shows {got}, expected {expected} in this order"

    return check


@pytest.mark.parametrize("slice_name", ["rgb", "depth", "lidar"])
def test_similarity_search_finds_on_every_slice(dataset, app_server, page, slice_name):
    query_pair = "sphere_0002"
    shown = dataset.select_group_slices(slice_name)
    query_id = shown.match({"pair_id": query_pair}).first().id
    expected = shown.sort_by_similarity(query_id, k=25, brain_key="cilp_search").values("pair_id")
    assert len(expected) == 2 * N_PER_CLASS and expected[0] == query_pair

    open_dataset(page, app_server, dataset)
    try:
        if slice_name != "rgb":
            select_slice(page, slice_name)
        select_tile(page, app_server, query_pair)
        page.get_by_test_id("action-sort-by-similarity").click()
        page.get_by_test_id("popout").get_by_text("Show similar samples", exact=True).click()  # the default index
        panel = page.get_by_text("Similarity Search", exact=True).first
        panel.wait_for(timeout=SHOW_TIMEOUT * 1000)  # FiftyOne 1.22 runs the search in its panel
        page.get_by_text("cilp_search · k=25").wait_for(timeout=SHOW_TIMEOUT * 1000)
        page.get_by_text("Completed", exact=True).wait_for(timeout=SHOW_TIMEOUT * 1000)
        screenshot(page, f"similar_panel_{slice_name}")
        page.locator("button[aria-label='Show results']").click(force=True)  # inside a drag handle marked aria-disabled
        wait_for_tiles(page, app_server, pair_order(expected), f"the similar samples of the {slice_name} slice")
    finally:
        screenshot(page, f"similar_{slice_name}")
    assert "do not exist in this index" not in app_server.log_tail(50_000), problem_report(page, app_server)


def choose_grid_sort(page, field: str) -> list[str]:
    """Sort the grid by ``field`` with the "Sort by" selector; the fields it offered."""
    page.get_by_test_id("selector-Sort by").click()
    results = page.get_by_test_id("selector-results-container")
    results.get_by_test_id(f"selector-result-{field}").wait_for()
    offered = results.inner_text().split()
    results.get_by_test_id(f"selector-result-{field}").click()
    return offered


def test_grid_sort_by_offers_the_pair_scores(dataset, app_server, page):
    open_dataset(page, app_server, dataset)
    try:
        offered = choose_grid_sort(page, "cilp_pair_similarity")
        assert {"cilp_pair_similarity", "cilp_pair_rank"} <= set(offered), offered
        show_field_on_tiles(page, "pair_id")
        least_aligned = dataset.select_group_slices("rgb").sort_by("cilp_pair_similarity").values("pair_id")
        wait_for_tiles(page, app_server, pair_order(least_aligned), "the pairs sorted by their similarity")
    finally:
        screenshot(page, "sort_by")


def test_grid_sorts_by_the_pair_scores_and_matches_keep_their_order(dataset, app_server, page):
    rgb = dataset.select_group_slices("rgb")
    k = 4
    similarity = dict(zip(*rgb.values(["pair_id", "cilp_pair_similarity"])))

    def matches(pair_id):
        query_id = rgb.match({"pair_id": pair_id}).first().id
        return writeback.find_cross_modal_matches(dataset, [query_id], k=k).values("pair_id")

    def a_sort_would_reorder(found):  # else a grid sort could not show that it reorders them
        return sorted(found, key=similarity.get) != found

    query_pair, expected = next((p, found) for p in sorted(similarity) if a_sort_would_reorder(found := matches(p)))

    open_dataset(page, app_server, dataset)
    try:
        choose_grid_sort(page, "cilp_pair_similarity")
        select_tile(page, app_server, query_pair)
        form = open_operator(page, "CILP: find cross-modal matches")
        field_input(form, "Matches to show").fill(str(k))
        wait_for_form_params(page, "find_cross_modal_matches", k=k)
        run_operator(page, form, app_server, output=False)
        wait_for_tiles(page, app_server, pair_order(expected), "the matches, while the grid is sorted")
    finally:
        screenshot(page, "matches_sorted")


def colour_column(body: bytes) -> tuple[list[int], dict]:
    """An ``/embeddings/v2/color`` answer: each point's class index (0xFFFF: no value, drawn grey),
    and the meta tail (FiftyOne 1.22's format: a 16-byte header, u16 values, JSON)."""
    import json

    _, _, dtype, _, n, _ = struct.unpack("<IHBBII", body[:16])
    assert dtype == 2, f"expected categorical (u16) colours, got dtype {dtype}"
    return list(struct.unpack(f"<{n}H", body[16:16 + 2 * n])), json.loads(body[16 + 2 * n:])


def choose_colour_field(page, panel, field: str, tries: int = 3) -> None:
    """Colour the Embeddings panel's points by ``field``, as a person does: the "Color by" button, then
    the field typed and picked. On a busy machine the first click may land before the menu is ready."""
    for attempt in range(tries):
        panel.get_by_role("button", name="Color by").click()
        combobox = panel.get_by_role("combobox", name="Color by")
        try:
            combobox.wait_for(timeout=10_000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: the menu did not open
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
            continue
        combobox.fill(field)
        page.get_by_role("option", name=field).first.click()
        return


@pytest.mark.parametrize("slice_name", ["rgb", "depth"])
@pytest.mark.parametrize("brain_key", ["cilp_rgb_map", "cilp_lidar_map"])
def test_embeddings_panel_colours_every_cilp_map_by_class(dataset, app_server, page, slice_name, brain_key):
    offered = sorted(key for key in dataset.list_brain_runs()
                     if dataset.get_brain_info(key).config.type == "visualization")
    assert offered == ["cilp_lidar_map", "cilp_rgb_map"]  # the maps the panel offers: each is tested
    answers = []
    page.on("response", lambda r: answers.append(r) if r.url.endswith("/embeddings/v2/color") else None)
    open_dataset(page, app_server, dataset)
    try:
        if slice_name != "rgb":
            select_slice(page, slice_name)
        page.get_by_test_id("new-panel-btn").first.click()
        page.get_by_test_id("new-panel-option-Embeddings").click()
        panel = page.get_by_test_id("panel-content-Embeddings")
        panel.get_by_text(brain_key, exact=True).click(timeout=2 * SHOW_TIMEOUT * 1000)  # a busy machine lists slowly
        panel.get_by_text(f"{2 * N_PER_CLASS} points").wait_for(timeout=2 * SHOW_TIMEOUT * 1000)
        choose_colour_field(page, panel, "ground_truth.label")
        deadline = time.monotonic() + 2 * SHOW_TIMEOUT
        while not answers:
            assert time.monotonic() < deadline, f"{brain_key}: the panel never asked for colours\n" \
                                                f"{problem_report(page, app_server)}"
            page.wait_for_timeout(250)
        deadline = time.monotonic() + SHOW_TIMEOUT  # a first answer may come before the field was applied
        while 0xFFFF in colour_column(answers[-1].body())[0] and time.monotonic() < deadline:
            page.wait_for_timeout(250)
    finally:
        screenshot(page, f"embeddings_{slice_name}_{brain_key}")
    classes, meta = colour_column(answers[-1].body())
    assert len(classes) == 2 * N_PER_CLASS and 0xFFFF not in classes, f"{brain_key} on {slice_name}: {classes}"
    assert sorted(c["label"] for c in meta["classes"]) == ["cube", "sphere"], meta
