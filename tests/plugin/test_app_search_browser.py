"""Search that finds, in the FiftyOne App: what ``cilp apply DATASET --checkpoint cilp`` gives a person.

* The grid's similarity search ("Sort by image similarity") preselects the rgb slice's own
  index on the rgb slice and shows the nearest images in their order (FiftyOne 1.22 lists
  every index of the dataset and preselects the first by name; an index of another slice
  fails silently, with "Query IDs ... do not exist in this index" in the server log).
* The grid's "Sort by" offers the pair scores (indexed by the apply).
* ``find_cross_modal_matches`` shows its matches in their order while a grid sort is set:
  NOT yet (an expected failure, strict: it fails the run once it passes).

Screenshots: ``test-artifacts/app_search_similar.png``, ``app_search_sort_by.png``,
``app_search_matches_sorted.png``.
"""

from __future__ import annotations

import uuid

import pytest

from cilp_plugin import cli, crossmodal, ingest, splits, synth

from .app_browser import artifacts_dir, clear_screenshots, needs_chromium, running_app
from .test_app_operators_browser import (  # the helpers of the other operator tests
    SHOW_TIMEOUT,
    browser,  # noqa: F401 - a fixture
    field_input,
    open_dataset,
    open_operator,
    page,  # noqa: F401 - a fixture
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
    """A persistent copy per test: the App keeps one view and sort per dataset."""
    copy = base_dataset.clone(f"{base_dataset.name}-{request.node.name[5:25]}", persistent=True)
    yield copy
    copy.delete()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("search-server") / "app_server.log") as server:
        yield server


def screenshot(page, what: str) -> None:
    page.screenshot(path=artifacts_dir() / f"app_search_{what}.png")


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


def test_similarity_search_preselects_the_slices_own_index(dataset, app_server, page):
    query_pair = "sphere_0002"
    query_id = dataset.select_group_slices("rgb").match({"pair_id": query_pair}).first().id
    dataset.group_slice = "rgb"
    expected = dataset.sort_by_similarity(query_id, k=25, brain_key="cilp_image_search").values("pair_id")
    assert len(expected) == 2 * N_PER_CLASS and expected[0] == query_pair

    sorts = []  # the brain keys of the similarity sorts the App asks for
    page.on("request", lambda r: sorts.append((r.post_data_json or {}).get("extended", {}).get("brain_key"))
            if r.url.endswith("/sort") and r.method == "POST" else None)
    open_dataset(page, app_server, dataset)
    try:
        select_tile(page, app_server, query_pair)
        page.get_by_test_id("action-sort-by-similarity").click()
        page.get_by_test_id("popout").get_by_text("Show similar samples", exact=True).click()  # the default index
        panel = page.get_by_text("Similarity Search", exact=True).first
        panel.wait_for(timeout=SHOW_TIMEOUT * 1000)  # FiftyOne 1.22 runs the search in its panel
        card = page.get_by_text("cilp_image_search · k=25")
        card.wait_for(timeout=SHOW_TIMEOUT * 1000)
        page.get_by_text("Completed", exact=True).wait_for(timeout=SHOW_TIMEOUT * 1000)
        screenshot(page, "similar_panel")
        page.locator("button[aria-label='Show results']").click(force=True)  # inside a drag handle marked aria-disabled
        wait_for_tiles(page, app_server, pair_order(expected), "the similar images")
    finally:
        screenshot(page, "similar")
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


def test_matches_keep_their_order_once_the_grid_sort_is_cleared(dataset, app_server, page):
    """The way round that the README gives: "Sort by" set back to "-" before searching."""
    query_pair, k = "cube_0003", 4
    query_id = dataset.select_group_slices("rgb").match({"pair_id": query_pair}).first().id
    expected = crossmodal.find_cross_modal_matches(dataset, [query_id], k=k).values("pair_id")

    open_dataset(page, app_server, dataset)
    try:
        choose_grid_sort(page, "cilp_pair_rank")
        choose_grid_sort(page, "-")
        select_tile(page, app_server, query_pair)
        form = open_operator(page, "CILP: find cross-modal matches")
        field_input(form, "Matches to show").fill(str(k))
        wait_for_form_params(page, "find_cross_modal_matches", k=k)
        run_operator(page, form, app_server, output=False)
        wait_for_tiles(page, app_server, pair_order(expected), "the matches, once the grid sort is cleared")
    finally:
        screenshot(page, "matches_unsorted")


@pytest.mark.xfail(strict=True, reason="not fixed: the App applies its grid sort after any view an operator sets "
                   "(FiftyOne 1.22 sends sortBy with every page unless a similarity sort is an extended stage, "
                   "which no Python operation sets; FiftyOne's own Similarity Search panel results are "
                   "reordered the same way), and no operation clears the sort")
def test_grid_sorts_by_the_pair_scores_and_matches_keep_their_order(dataset, app_server, page):
    rgb = dataset.select_group_slices("rgb")
    k = 4
    rank = dict(zip(*rgb.values(["pair_id", "cilp_pair_rank"])))

    def matches(pair_id):
        query_id = rgb.match({"pair_id": pair_id}).first().id
        return crossmodal.find_cross_modal_matches(dataset, [query_id], k=k).values("pair_id")

    def sorted_by_rank_differs(found):  # else a grid sort could not show that it reorders them
        ranks = [rank[p] for p in found]
        return len(set(ranks)) == len(ranks) and sorted(found, key=rank.get) != found

    query_pair, expected = next((p, found) for p in sorted(rank) if sorted_by_rank_differs(found := matches(p)))

    open_dataset(page, app_server, dataset)
    try:
        choose_grid_sort(page, "cilp_pair_rank")
        select_tile(page, app_server, query_pair)
        form = open_operator(page, "CILP: find cross-modal matches")
        field_input(form, "Matches to show").fill(str(k))
        wait_for_form_params(page, "find_cross_modal_matches", k=k)
        run_operator(page, form, app_server, output=False)
        wait_for_tiles(page, app_server, pair_order(expected), "the matches, while the grid is sorted by rank")
    finally:
        screenshot(page, "matches_sorted")
