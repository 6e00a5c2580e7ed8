"""The synthetic generator: the DLI layout, determinism, and class signal in both modalities."""

import filecmp
import hashlib
import re

import numpy as np
import pytest
import torch
from torch import nn

from cilp_plugin import cli
from cilp_plugin.data import layout, synth


def tree_files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_output_follows_the_dli_layout(tiny_data):
    report = layout.scan(tiny_data)
    assert report.usable
    assert [len(c.pairs) for c in report.classes.values()] == [8, 8]
    az, ze = report.angles("sphere")
    assert az.dtype == np.float32 and az.shape == (64,)
    assert np.rad2deg(az[0]) == pytest.approx(-16) and np.rad2deg(az[-1]) == pytest.approx(15.5)
    rgb = layout.read_rgb(report.pairs[0].rgb_path)
    assert (rgb[..., 3] == 255).all() and rgb[..., :3].mean() / 255 < 0.05  # dark, like the original
    depth = layout.read_depth(report.pairs[0].lidar_path)
    hits = depth < layout.NO_RETURN
    assert 0 < hits.mean() < 0.6 and (depth[~hits] >= layout.NO_RETURN).all()


def test_same_arguments_give_byte_identical_files(tmp_path):
    a = synth.generate(tmp_path / "a", n_per_class=70, seed=3)
    b = synth.generate(tmp_path / "b", n_per_class=70, seed=3, workers=1)
    files = tree_files(a)
    assert files == tree_files(b) and len(files) == 2 * 70 * 2 + 4
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def test_a_larger_set_starts_with_the_smaller_one_and_seeds_differ(tmp_path):
    small = synth.generate(tmp_path / "small", n_per_class=3, seed=5)
    large = synth.generate(tmp_path / "large", n_per_class=5, seed=5)
    other = synth.generate(tmp_path / "other", n_per_class=3, seed=6)
    png = "spheres/rgb/0002.png"
    assert filecmp.cmp(small / png, large / png, shallow=False)
    assert not filecmp.cmp(small / png, other / png, shallow=False)


def test_difficulty_knobs_change_the_scene(tmp_path):
    plain = synth.generate(tmp_path / "plain", n_per_class=4, seed=1)
    hard = synth.generate(tmp_path / "hard", n_per_class=4, seed=1,
                          config=synth.SceneConfig(ground_plane=True, distractors=3))

    def returns(root):
        return np.mean([(layout.read_depth(p.lidar_path) < layout.NO_RETURN).mean() for p in layout.scan(root).pairs])

    assert returns(hard) > returns(plain) + 0.2  # the floor fills the lower beams


def test_generate_refuses_existing_data_and_bad_sizes(tiny_data, tmp_path, capsys):
    with pytest.raises(FileExistsError, match="--force"):
        synth.generate(tiny_data, n_per_class=2)
    with pytest.raises(ValueError, match="n_per_class"):
        synth.generate(tmp_path / "x", n_per_class=0)
    with pytest.raises(ValueError, match="SceneConfig.distance"):
        synth.SceneConfig(distance=(5, 2))
    assert cli.main(["generate", str(tiny_data), "--n-per-class", "2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not list(tiny_data.parent.glob(".data.*")), "a failed run left its staging folder"


def test_cli_generate_writes_the_requested_pairs(tmp_path, capsys):
    assert cli.main(["generate", str(tmp_path / "d"), "--n-per-class", "3", "--seed", "9"]) == 0
    assert "wrote 6 pairs" in capsys.readouterr().out
    assert len(layout.scan(tmp_path / "d").pairs) == 6


def load_arrays(root):
    report = layout.scan(root)
    az, ze = report.angles("cube")
    rgb = np.stack([layout.read_rgb(p.rgb_path) for p in report.pairs]).transpose(0, 3, 1, 2)
    lidar = np.stack([layout.depth_to_xyza(layout.read_depth(p.lidar_path), az, ze) for p in report.pairs])
    labels = np.array([layout.LABELS.index(p.label) for p in report.pairs])
    return torch.tensor(rgb, dtype=torch.float32), torch.tensor(lidar), torch.tensor(labels)


def held_out_accuracy(x, y, train, test, epochs=20):
    """Train a tiny CNN on ``train`` indices and score it on ``test``."""
    mean, std = x[train].mean((0, 2, 3), keepdim=True), x[train].std((0, 2, 3), keepdim=True) + 1e-6
    x = (x - mean) / std
    model = nn.Sequential(
        nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 2),
    )
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train))].split(32):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return (model(x[test]).argmax(1) == y[test]).float().mean().item()


@pytest.mark.slow  # trains a classifier per modality
def test_each_modality_alone_carries_the_class(tmp_path):
    torch.manual_seed(0)
    rgb, lidar, labels = load_arrays(synth.generate(tmp_path / "d", n_per_class=250, seed=11))
    order = torch.randperm(len(labels))
    train, test = order[:400], order[400:]
    assert held_out_accuracy(lidar, labels, train, test) >= 0.9
    assert held_out_accuracy(rgb, labels, train, test) >= 0.9


def render(config, shape, n=64, seed=11):
    class_index = list(synth.SHAPES.values()).index(shape)
    rngs = [np.random.default_rng([seed, class_index, i]) for i in range(n)]
    return synth.render_batch(rngs, shape, config, synth.BEAM_ANGLES, synth.BEAM_ANGLES)


def test_the_default_look_is_the_originals_and_the_legacy_look_stays_reachable():
    (cube_rgb, cube_depth), (sphere_rgb, sphere_depth) = (render(synth.SceneConfig(), s) for s in ("cube", "sphere"))
    rgb = np.concatenate([cube_rgb, sphere_rgb])[..., :3] / 255
    assert 0.0035 < rgb.mean() < 0.0075 and 0.04 < rgb.std() < 0.08  # the published statistics
    assert (rgb == 0).mean() > 0.97  # a black background without noise: small lit objects
    lit = rgb[rgb.max(-1) > 0.3]
    assert np.median(lit.min(-1) / lit.max(-1)) > 0.3  # pastel: every channel lit, not one primary
    returns = [(d < layout.NO_RETURN).sum((1, 2)) for d in (cube_depth, sphere_depth)]
    assert 1.6 < np.median(returns[0]) / np.median(returns[1]) < 2.6  # equal-size prims: cubes twice the beams
    legacy_rgb, legacy_depth = render(synth.LEGACY, "sphere")
    legacy_lit = legacy_rgb[..., :3][legacy_rgb[..., :3].max(-1) > 20] / 255
    assert np.median(legacy_lit.min(-1) / legacy_lit.max(-1)) < 0.2  # one dominant channel
    assert np.median((legacy_depth < layout.NO_RETURN).sum((1, 2))) > 1.5 * np.median(returns[1])  # nearer, larger


def test_generate_takes_the_look_and_the_scene_knobs(tmp_path, capsys):
    dest = tmp_path / "far"
    assert cli.main(["generate", str(dest), "--n-per-class", "2", "--look", "legacy", "--no-return", "100",
                     "--distance", "2", "5", "--size", "0.2", "0.3"]) == 0
    depth = layout.read_depth(dest / "cubes" / "lidar" / "0000.npy")
    assert depth.max() == 100.0 and 1.5 < depth.min() < 5
    rgb = layout.read_rgb(dest / "cubes" / "rgb" / "0000.png")[..., :3]
    assert (rgb > 0).mean() > 0.2  # the legacy look's camera noise (the default look has none)
    for field, value, message in (("no_return", 20.0, "no_return: expected a value >= 50.0"),
                                  ("camera_fov", 200.0, "camera_fov: expected degrees in (0, 180)"),
                                  ("palette", "neon", "palette: unknown value 'neon'"),
                                  ("back_light", 2.0, "back_light: expected a value in [-1, 1]")):
        with pytest.raises(ValueError, match=re.escape(f"SceneConfig.{message}")):
            synth.SceneConfig(**{field: value})


def test_quirks_knob_adds_each_quirk_on_its_own_stems_and_is_deterministic(tmp_path, capsys):
    plain = synth.generate(tmp_path / "plain", n_per_class=12, seed=4)
    assert cli.main(["generate", str(tmp_path / "a"), "--n-per-class", "12", "--seed", "4", "--quirks", "2"]) == 0
    a = tmp_path / "a"
    b = synth.generate(tmp_path / "b", n_per_class=12, seed=4, quirks=2, workers=1)
    other_seed = synth.generate(tmp_path / "c", n_per_class=12, seed=5, quirks=2)

    files = tree_files(a)
    assert files == tree_files(b) and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
    copies = sorted(str(f) for f in set(files) - set(tree_files(plain)))
    assert len(copies) == 4 and all(" (1)." in name for name in copies)  # 2 per class, the rest as rendered
    assert copies != sorted(str(f) for f in set(tree_files(other_seed)) - set(tree_files(plain)))
    changed = {f for f in tree_files(plain) if not filecmp.cmp(plain / f, a / f, shallow=False)}
    # per class: 2 images blanked, 2 pairs overwritten by an earlier pair's files (both files each)
    assert len(changed) == 2 * (2 + 2 * 2)
    for folder in layout.CLASS_FOLDERS:
        blanked = [f for f in changed if f.parts[0] == folder and f.parts[1] == "rgb"
                   and not layout.read_rgb(a / f)[..., :3].any()]
        assert len(blanked) == 2 and all((layout.read_rgb(a / f)[..., 3] == 255).all() for f in blanked)
        overwritten = sorted({f.stem for f in changed if f.parts[0] == folder} - {f.stem for f in blanked})
        assert len(overwritten) == 2
        for stem in overwritten:  # each now a byte copy of an earlier stem's pair
            assert any(filecmp.cmp(a / folder / "rgb" / f"{stem}.png", a / folder / "rgb" / f"{s:04d}.png", False)
                       and filecmp.cmp(a / folder / "lidar" / f"{stem}.npy", a / folder / "lidar" / f"{s:04d}.npy",
                                       False) for s in range(int(stem)))


@pytest.mark.parametrize("n_per_class, quirks, message", [
    (7, 2, "quirks: 2 of each kind take 8 pairs per class, but n_per_class is 7"),
    (8, -1, "quirks: expected a number >= 0, got -1"),
])
def test_quirks_knob_refuses_what_does_not_fit_before_rendering(tmp_path, n_per_class, quirks, message):
    with pytest.raises(ValueError, match=message):
        synth.generate(tmp_path / "d", n_per_class=n_per_class, quirks=quirks)
    assert list(tmp_path.iterdir()) == []  # nothing rendered, no staging folder left


def test_the_legacy_look_renders_the_earlier_generators_files_byte_for_byte(tmp_path):
    # hashes of files written by the generator before its fit (commit cbc9863), same arguments
    root = synth.generate(tmp_path / "legacy", 3, seed=5, config=synth.LEGACY)
    for name, sha256 in (
            ("cubes/rgb/0001.png", "5f2a6d45db7ceff0daed034503bd9c6464d9ebba5aefac89659314aac99adb79"),
            ("spheres/lidar/0002.npy", "842d39a5f7f58d7ec804bb72743d6711ee61f79a845c2c98b7522664f70d049e")):
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == sha256, name
