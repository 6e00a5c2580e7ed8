import fiftyone.operators as foo
import fiftyone.operators.types as types

from cilp_plugin.runs.request import CILPRequest, options
from mm_models.choices import PIPELINE

from ._common import class_fields, flag_outside_roots, option_field, progress_reporter, server_path, split_tag_fields

#: the form's checkbox of each stage (a list field with choices crashes the App's form)
STAGE_LABELS = {
    "lidar": "lidar: the LiDAR classifier",
    "cilp": "cilp: contrastive RGB-LiDAR pre-training",
    "projector": "projector: RGB embedding -> LiDAR embedding",
    "rgb2lidar": "rgb2lidar: the RGB -> LiDAR classifier",
}
#: the options whose fields the form draws itself: the stages' check boxes, a path confined to the
#: allowed folders, the tags checked against the dataset
OWN_FIELDS = ("stages", "lidar_from", "train_tag", "val_tag")


class TrainCILP(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="train_cilp",
            label="CILP: train the cross-modal pipeline",
            description="Train the LiDAR classifier, contrastive RGB-LiDAR pre-training, the projector and the "
                        "RGB -> LiDAR classifier as linked runs (GPU when present)",
            icon="/assets/icon.svg",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        return types.Property(train_cilp_form(ctx), view=types.View(label="Train the CILP stages"))

    def execute(self, ctx):
        from cilp_plugin.runs import train_cilp

        request = CILPRequest.from_values({**ctx.params, "stages": chosen_stages(ctx.params),
                                           "lidar_from": server_path("lidar_from", ctx.params.get("lidar_from")),
                                           "runs_dir": None})  # runs go where the App's runs go
        results = train_cilp(ctx.dataset, request, progress=progress_reporter(ctx))
        return {
            "runs": {stage: result.run_dir.name for stage, result in results.items()},
            "best": {stage: result.best for stage, result in results.items()},
            "initial": {stage: result.manifest["initial"] for stage, result in results.items()
                        if "initial" in result.manifest},
            "summary": "; ".join(result.summary() for result in results.values()),
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Best epoch of each stage")
        return types.Property(outputs)


def stage_param(stage: str) -> str:
    return f"stage_{stage}"


def chosen_stages(params: dict) -> list[str]:
    """The stages to train: an SDK call's ``stages`` list (or comma-separated string), else the form's
    ticked ``stage_<name>`` boxes (each ticked unless sent unticked)."""
    if params.get("stages") is not None:
        return params["stages"]
    return [stage for stage in PIPELINE if params.get(stage_param(stage), True)]


def runs_read(ctx) -> dict:
    """The recorded runs of this prefix a training may read (name -> folder): the stages not ticked (the
    parents of those ticked), and the ticked ones too when resume is ticked."""
    from cilp_plugin.runs import recorded_runs

    if ctx.dataset is None:
        return {}
    chosen, prefix, recorded = chosen_stages(ctx.params), ctx.params.get("run_prefix") or "", recorded_runs(ctx.dataset)
    read = [stage for stage in PIPELINE if stage not in chosen or ctx.params.get("resume")]
    return {prefix + stage: recorded[prefix + stage] for stage in read if prefix + stage in recorded}


def train_cilp_form(ctx) -> types.Object:
    inputs = types.Object()
    class_fields(ctx, inputs, runs_read(ctx))
    inputs.view("stages_header", types.Header(label="Stages", description="a later stage alone reuses this "
                                                      "dataset's runs of the earlier ones"))
    for stage in PIPELINE:
        inputs.bool(stage_param(stage), default=True, label=STAGE_LABELS[stage], view=types.CheckboxView())
    if not chosen_stages(ctx.params):
        nothing = inputs.view("no_stage", types.Error(label="Tick at least one stage"))
        nothing.invalid, nothing.error_message = True, "stages: tick at least one stage"
    for option in options(CILPRequest):
        if option.name == "lidar_from":
            field = option_field(inputs, option, description=f"a path on the server (optional): {option.help}")
            flag_outside_roots(field, "lidar_from", ctx.params.get("lidar_from"))
        elif option.name == "train_tag":
            split_tag_fields(ctx, inputs)
        elif option.form and option.name not in OWN_FIELDS:
            option_field(inputs, option)
    return inputs
