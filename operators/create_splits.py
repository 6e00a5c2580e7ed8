import fiftyone.operators as foo
import fiftyone.operators.types as types

from cilp_plugin.data.layout import QUIRK_TAGS  # numpy and PIL only: cheap at load
from cilp_plugin.dataset import check_exclude_tags

from ._common import file_path, flag_outside_roots, params_with_defaults, server_path, summary_output

DEFAULTS = dict(val=0.2, test=0.0, subset=1.0, seed=42, stratify=True, from_json=None, to_json=None,
                exclude_tags=None)


class CreateSplits(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="create_splits",
            label="CILP: create train/val/test splits",
            description="Tag every slice of each RGB/LiDAR pair train, val or test (or import a split file)",
            icon="/assets/icon.svg",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        return types.Property(splits_form(ctx), view=types.View(label="Create splits"))

    def execute(self, ctx):
        from cilp_plugin.dataset import create_splits

        params = params_with_defaults(ctx, DEFAULTS)
        params["from_json"] = server_path("from_json", params["from_json"])
        params["to_json"] = json_target(params["to_json"])
        result = create_splits(ctx.dataset, **params)
        ctx.trigger("reload_dataset")
        return {**result.split.counts(), "missing": result.missing,
                "excluded": {tag: len(ids) for tag, ids in result.excluded.items()}, "summary": result.summary()}

    def resolve_output(self, ctx):
        return summary_output()


def splits_form(ctx) -> types.Object:
    inputs = types.Object()
    source = inputs.str("from_json", label="Import split file (optional)",
                        description='reference JSON {"train": [...], "val": [...], "seed": 42, ...}; '
                                    "when set, the fractions below are ignored")
    if file_path(ctx.params.get("from_json")):
        flag_outside_roots(source, "from_json", ctx.params["from_json"])
    if not file_path(ctx.params.get("from_json")):
        inputs.float("val", default=DEFAULTS["val"], min=0, max=0.99, label="Validation fraction")
        inputs.float("test", default=DEFAULTS["test"], min=0, max=0.99, label="Test fraction")
        inputs.float("subset", default=DEFAULTS["subset"], min=0.01, max=1, label="Subset of pairs to use")
        inputs.int("seed", default=DEFAULTS["seed"], label="Seed")
        inputs.bool("stratify", default=DEFAULTS["stratify"], label="Keep the class balance in every split")
        val, test = ctx.params.get("val", DEFAULTS["val"]), ctx.params.get("test", DEFAULTS["test"])
        if val is not None and test is not None and val + test >= 1:
            warning = inputs.view("fractions", types.Error(label="val + test must be below 1"))
            warning.invalid = True
    exclude_tags_field(ctx, inputs)
    target = inputs.str("to_json", label="Export the split to (optional)", description="a .json path")
    if file_path(ctx.params.get("to_json")):
        flag_outside_roots(target, "to_json", ctx.params["to_json"])
    return inputs


def json_target(value) -> str | None:
    """The export path: a .json file inside the allowed folders (never another kind of file)."""
    path = server_path("to_json", value)
    if path is not None and not path.lower().endswith(".json"):
        raise ValueError(f"to_json: expected a .json file, got {file_path(value)}")
    return path


def exclude_tags_field(ctx, inputs) -> None:
    """The tags whose pairs the split leaves out; the form says how many pairs carry ingest's quirk tags."""
    counts = ctx.dataset.select_group_slices("rgb").count_sample_tags() \
        if ctx.dataset is not None and ctx.dataset.media_type == "group" else {}
    found = ", ".join(f"{tag}: {counts.get(tag, 0)} pairs" for tag in QUIRK_TAGS)
    prop = inputs.list("exclude_tags", types.String(), label="Leave out pairs tagged (optional)",
                       description=f"e.g. {' and '.join(QUIRK_TAGS)}, which ingest gives all-black RGB images and "
                                   f"byte-identical pairs (this dataset: {found}); they get no split tag")
    try:
        check_exclude_tags(ctx.params.get("exclude_tags"))
    except ValueError as exc:
        prop.invalid, prop.error_message = True, str(exc)
