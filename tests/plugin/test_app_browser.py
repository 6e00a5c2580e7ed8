"""End to end: the FiftyOne App, served on 127.0.0.1, shows every slice of an ingested dataset,
and the embedding map that ``apply_model`` computes.

A small synthetic data set is ingested into a persistent grouped dataset; the App
server runs as a subprocess against the test's private database; headless
Chromium (driven by Playwright) opens the dataset and, through the grid's slice
selector, shows the ``rgb`` (default), ``depth`` and ``lidar`` slices in turn. For
each slice the test checks that

* the selector and the URL name the slice,
* the browser fetched, with status 200, the media file of every sample of that
  slice (the PNG, the colour-mapped depth PNG, the bird's-eye thumbnail of the
  point cloud) through the server's ``/media`` route,
* the grid holds one tile per group, and each tile's pixels match the picture of
  a different sample of that slice (so the pictures were decoded and drawn).

A second test trains a small model, applies it, opens the Embeddings panel as a user
does (new panel, Embeddings, the run's map) and checks that the map plots one point
per pair.

A screenshot per slice is kept in ``test-artifacts/`` at the repository root
(or ``$CILP_TEST_ARTIFACTS``): ``app_grid_<slice>.png`` and ``app_embeddings.png``.
"""

from __future__ import annotations

import dataclasses
import io
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from cilp_plugin import writeback
from cilp_plugin.data import synth
from cilp_plugin.dataset import arrays, ingest

from .app_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    AppServer,
    artifacts_dir,
    clear_screenshots,
    dismiss_popups,
    needs_chromium,
    running_app,
)

SLICES = ("rgb", "depth", "lidar")
N_PER_CLASS = 6
GRID_TIMEOUT = 45.0  # s, for the grid to show a slice
#: least correlation of a tile with its sample's picture; seen: >= 0.96, and <= 0.7 with the
#: picture of the same group in another slice
TILE_MATCH = 0.85

pytestmark = [pytest.mark.browser, needs_chromium]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def app_dataset(tmp_path_factory):
    """A persistent 12-group rgb/depth/lidar dataset, deleted afterwards."""
    lit = dataclasses.replace(synth.SceneConfig(), back_light=0.0)  # no all-black picture: each tile has a match
    root = synth.generate(tmp_path_factory.mktemp("app") / "data", n_per_class=N_PER_CLASS, seed=3, workers=1,
                          config=lit)
    dataset = ingest.ingest(root, f"cilp-browser-{uuid.uuid4().hex[:8]}").dataset
    yield dataset
    dataset.delete()


@pytest.fixture
def app_server(tmp_path):
    with running_app(tmp_path / "app_server.log") as server:
        yield server


@pytest.fixture
def page(tmp_path):
    """A Chromium page with a fresh profile; records every ``/media`` answer in ``page.media``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        pw.selectors.set_test_id_attribute("data-cy")  # the App's test ids
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            page.media = []  # (status, filepath) of each /media answer, in order
            page.errors = []  # uncaught exceptions in the page, for failure messages

            def on_response(response):
                url = urlparse(response.url)
                if url.path == "/media":
                    page.media.append((response.status, parse_qs(url.query).get("filepath", [""])[0]))

            context.on("response", on_response)  # the context also sees requests made by workers
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            yield page
        finally:
            context.close()


# --------------------------------------------------------------------------- helpers


def slice_media(dataset, name: str) -> list[str]:
    """The files the grid shows for the samples of one slice, in dataset order."""
    view = dataset.select_group_slices(name)
    if dataset.group_media_types[name] == "point-cloud":
        return view.values("orthographic_projection_metadata.filepath")
    return view.values("filepath")


def _features(picture: Image.Image) -> np.ndarray:
    """A 64x64 colour thumbnail, flattened; colour tells an RGB picture from the depth map of the
    same scene (same silhouette), which grey levels do not."""
    picture = picture.convert("RGB").resize((64, 64), Image.BILINEAR)
    return np.asarray(picture, dtype=np.float32)[:44].ravel()  # the ground_truth tag sits in the bottom strip


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``a`` with every row of ``b``."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    return (a @ b.T) / np.maximum(norms, 1e-6)


def grid_problem(page, expected: np.ndarray) -> tuple[str | None, bytes]:
    """Compare the rendered grid with the expected pictures; (None or what is wrong, screenshot)."""
    page.mouse.move(5, VIEWPORT["height"] - 5)  # a hovered tile shows a checkbox and a shade
    boxes = page.evaluate("""() => Array.from(document.querySelectorAll('[data-cy="looker"]'), tile => {
        const r = tile.getBoundingClientRect();
        return [r.left, r.top, r.right, r.bottom];
    }).filter(([left, top, right, bottom]) => right - left > 20 && bottom - top > 20)""")
    shot = page.screenshot()
    if len(boxes) != len(expected):
        return f"the grid shows {len(boxes)} tiles, expected one per group ({len(expected)})", shot
    picture = Image.open(io.BytesIO(shot)).convert("RGB")
    rendered = np.stack([_features(picture.crop(tuple(round(v) for v in box))) for box in boxes])
    similarity = _correlation(rendered, expected)
    best = similarity.argmax(1)
    scores = similarity[np.arange(len(boxes)), best]
    if sorted(best.tolist()) != list(range(len(expected))) or scores.min() < TILE_MATCH:
        return (f"the tiles do not show this slice's pictures: best matching sample per tile {best.tolist()}, "
                f"correlations {[round(float(x), 2) for x in scores]} (want a permutation, each >= {TILE_MATCH})"), shot
    return None, shot


def load_pictures(files: list[str]) -> np.ndarray:
    """The pictures as the tiles are compared: one row of features per picture."""
    return np.stack([_features(Image.open(path)) for path in files])


def check_grid_shows(page, name: str, files: list[str], expected: np.ndarray, server: AppServer) -> Path:
    """Wait until the grid shows slice ``name``; save its screenshot; fail with the reason otherwise."""
    selector = page.get_by_test_id("selector-slice")
    wanted = set(files)
    screenshot = artifacts_dir() / f"app_grid_{name}.png"
    deadline = time.monotonic() + GRID_TIMEOUT
    while True:
        dismiss_popups(page)
        fetched = {path for status, path in page.media if status == 200}
        failed = sorted({(status, path) for status, path in page.media if status != 200})
        problem = None
        if selector.input_value() != name:
            problem = f"the slice selector shows {selector.input_value()!r}"
        elif failed:
            problem = f"the server failed to deliver media: {failed[:5]}"
        elif not wanted <= fetched:
            missing = sorted(wanted - fetched)
            problem = f"{len(missing)} of {len(wanted)} media files were never fetched, e.g. {missing[:3]}"
        shot = None
        if problem is None:
            problem, shot = grid_problem(page, expected)
        if problem is None or time.monotonic() > deadline:
            screenshot.write_bytes(shot or page.screenshot())
            break
        page.wait_for_timeout(250)
    if problem is not None:
        pytest.fail(f"slice {name!r}: {problem} after {GRID_TIMEOUT:.0f} s (screenshot: {screenshot}; "
                    f"page errors: {page.errors[:3]})\nApp server log:\n{server.log_tail(1500)}")
    return screenshot


def select_slice(page, name: str) -> None:
    """Pick a slice in the grid's slice selector, as a user does."""
    dismiss_popups(page)
    page.get_by_test_id("selector-slice").click()
    results = page.get_by_test_id("selector-results-container")
    results.get_by_test_id(f"selector-result-{name}").click()


# --------------------------------------------------------------------------- the test


def test_app_grid_shows_every_slice(app_dataset, app_server, page):
    files = {name: slice_media(app_dataset, name) for name in SLICES}
    assert all(len(paths) == 2 * N_PER_CLASS for paths in files.values()), {k: len(v) for k, v in files.items()}
    # the slices' pictures live in different folders: a fetch proves which slice is shown
    assert len({Path(paths[0]).parent for paths in files.values()}) == len(SLICES)
    pictures = {name: load_pictures(paths) for name, paths in files.items()}
    clear_screenshots("app_grid_")

    page.goto(f"{app_server.url}/datasets/{app_dataset.name}")
    selector = page.get_by_test_id("selector-slice")
    try:
        selector.wait_for(timeout=60_000)
    except Exception:
        page.screenshot(path=artifacts_dir() / "app_grid_load_failed.png")
        raise

    # the dataset opens on its default slice
    assert app_dataset.default_group_slice == "rgb"
    shots = [check_grid_shows(page, "rgb", files["rgb"], pictures["rgb"], app_server)]

    # the selector offers exactly the three slices
    dismiss_popups(page)
    selector.click()
    results = page.get_by_test_id("selector-results-container")
    results.wait_for()
    offered = results.evaluate("div => Array.from(div.children).map(e => e.innerText.trim())")
    assert sorted(offered) == sorted(SLICES), f"the slice selector offers {offered}"
    page.keyboard.press("Escape")

    for name in ("depth", "lidar"):
        page.media.clear()
        select_slice(page, name)
        shots.append(check_grid_shows(page, name, files[name], pictures[name], app_server))
        assert parse_qs(urlparse(page.url).query).get("slice") == [name], f"URL after choosing {name}: {page.url}"

    pcd_fetches = [path for _, path in page.media if path.endswith(".pcd")]
    assert not pcd_fetches, f"the grid loaded whole point clouds instead of their thumbnails: {pcd_fetches[:3]}"
    assert all(shot.stat().st_size > 0 for shot in shots)


def test_app_embeddings_panel_shows_the_map(app_dataset, app_server, page, tmp_path):
    from mm_models import ModelConfig, TrainConfig, train

    data = arrays.from_dataset(app_dataset).tensors()
    train(ModelConfig(family="late"), TrainConfig(epochs=1, batch_size=8), data, data, tmp_path / "late")
    result = writeback.apply_model(app_dataset, tmp_path / "late")
    assert result.brain_key == "late_map"
    geometry = []  # statuses of the panel's requests for the points
    page.on("response", lambda r: geometry.append(r.status) if r.url.endswith("/embeddings/v2/geometry") else None)

    page.goto(f"{app_server.url}/datasets/{app_dataset.name}")
    page.get_by_test_id("selector-slice").wait_for(timeout=60_000)
    page.get_by_test_id("looker").first.wait_for()
    dismiss_popups(page)
    page.get_by_test_id("new-panel-btn").click()
    page.get_by_test_id("new-panel-option-Embeddings").click()
    panel = page.get_by_test_id("panel-content-Embeddings")
    dismiss_popups(page)
    panel.get_by_text("late_map").click()
    shot = artifacts_dir() / "app_embeddings.png"
    try:
        panel.get_by_text(f"{2 * N_PER_CLASS} points").wait_for(timeout=30_000)
    finally:
        page.screenshot(path=shot)
    assert geometry and set(geometry) == {200}, f"the panel's geometry requests answered {geometry}"

    plot = panel.locator("canvas").last
    pixels = np.asarray(Image.open(io.BytesIO(plot.screenshot())).convert("RGB"), dtype=np.int16)
    background = np.median(pixels.reshape(-1, 3), axis=0)
    drawn = np.abs(pixels - background).sum(axis=2) > 60
    assert drawn.sum() > 2 * N_PER_CLASS, f"the map's canvas looks empty (screenshot: {shot})"
