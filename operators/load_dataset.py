import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._common import (
    file_path,
    flag_outside_roots,
    outside_roots,
    params_with_defaults,
    progress_reporter,
    server_path,
    summary_output,
)

DEFAULTS = dict(source="synthetic", name="cilp-assessment", path=None, url=None, dest=None,
                n_per_class=1000, seed=42, overwrite=False, classes=["cube", "sphere"], image_size=64, beams=64)


class LoadRGBLidarDataset(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="load_rgb_lidar_dataset",
            label="CILP: load RGB/LiDAR dataset",
            description="Build the grouped rgb/depth/lidar dataset from a folder, a download or synthetic data",
            icon="/assets/icon.svg",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        return types.Property(load_form(ctx), view=types.View(label="Load RGB/LiDAR data"))

    def execute(self, ctx):
        from cilp_plugin.dataset import load_dataset

        params = params_with_defaults(ctx, DEFAULTS)
        params["path"] = server_path("path", params["path"])
        params["dest"] = server_path("dest", params["dest"])
        if params["source"] == "synthetic" and params["overwrite"] and params["dest"]:
            check_replaceable("dest", params["dest"])
        result = load_dataset(**params, progress=progress_reporter(ctx))
        ctx.trigger("open_dataset", {"dataset": result.dataset.name})
        return {
            "dataset": result.dataset.name,
            "added": len(result.added),
            "groups": len(result.dataset),
            "vanished": result.vanished,
            "summary": result.summary(),
        }

    def resolve_output(self, ctx):
        return summary_output()


def load_form(ctx) -> types.Object:
    inputs = types.Object()
    sources = types.RadioGroup()
    sources.add_choice("synthetic", label="Synthetic", description="render cubes, spheres or other shapes offline")
    sources.add_choice("folder", label="Local folder", description="a folder in the DLI layout")
    sources.add_choice("url", label="Download", description="a Google Drive link or https URL of a zip")
    inputs.enum("source", sources.values(), default=DEFAULTS["source"], label="Source", view=sources)
    inputs.str("name", default=DEFAULTS["name"], required=True, label="Dataset name")

    source = ctx.params.get("source", DEFAULTS["source"])
    if source == "folder":
        prop = inputs.str("path", required=True, label="Data folder",
                          description="holds a folder per class (cubes/, spheres/, ...), each with rgb/ and lidar/")
        path = file_path(ctx.params.get("path"))
        if path:
            from pathlib import Path

            from cilp_plugin.service import allowed_roots, describe_roots

            if outside_roots("path", path):  # the same answer whether it exists or not
                prop.invalid = True
                prop.error_message = f"{path} is not a folder the operators may use ({describe_roots(allowed_roots())})"
            elif not Path(path).expanduser().is_dir():
                prop.invalid = True
                prop.error_message = f"{path} is not a folder"
    elif source == "url":
        inputs.str("url", required=True, label="URL")
        dest_field(ctx, inputs.str("dest", label="Download into",
                                   description="default: FiftyOne's dataset dir/cilp/download"))
        inputs.bool("overwrite", default=False, label="Replace existing downloaded data")
    else:
        classes_field(ctx, inputs)
        inputs.int("n_per_class", default=DEFAULTS["n_per_class"], min=1, label="Pairs per class")
        inputs.int("image_size", default=DEFAULTS["image_size"], min=16, max=2048, label="Image size",
                   description="side of the square images in pixels (the original's: 64)")
        inputs.int("beams", default=DEFAULTS["beams"], min=16, max=2048, label="LiDAR beams",
                   description="azimuth and zenith beams of the square range images (the original's: 64)")
        inputs.int("seed", default=DEFAULTS["seed"], label="Seed")
        dest_field(ctx, inputs.str("dest", label="Generate into",
                                   description="default: FiftyOne's dataset dir/cilp/synthetic-N-seedS"))
    return inputs


def classes_field(ctx, inputs) -> None:
    """The shapes to render, two or more: each a class of the dataset."""
    from cilp_plugin.data.synth import FOLDERS, check_classes

    shapes = types.DropdownView(multiple=True)
    for shape in FOLDERS:
        shapes.add_choice(shape, label=shape)
    prop = inputs.list("classes", types.String(), default=DEFAULTS["classes"], label="Classes", view=shapes,
                       description="the shapes to render, one class each (the assessment's: cube and sphere)")
    chosen = ctx.params.get("classes", DEFAULTS["classes"])
    try:
        if len(check_classes(chosen)) < 2:
            raise ValueError("classes: choose two shapes or more")
    except ValueError as exc:
        prop.invalid, prop.error_message = True, str(exc)


def dest_field(ctx, prop) -> None:
    dest = file_path(ctx.params.get("dest"))
    if dest:
        flag_outside_roots(prop, "dest", dest)


def check_replaceable(field: str, folder: str) -> None:
    """Generating over ``folder`` replaces it whole: allowed only for a data folder (the generator's
    class folders: cubes/, spheres/, cylinders/, ...)."""
    from pathlib import Path

    from cilp_plugin.data.layout import SHAPES

    folder = Path(folder)
    others = sorted(p.name for p in folder.iterdir() if p.name not in SHAPES) if folder.is_dir() else []
    if others:
        raise ValueError(f"{field}: {folder} holds more than the generator's class folders ({', '.join(others[:3])}"
                         f"{', ...' if len(others) > 3 else ''}): overwrite replaces only a data folder")
