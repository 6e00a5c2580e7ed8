import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._common import (flag_outside_roots, params_with_defaults, progress_reporter, server_path, split_tag_fields,
                      training_hardware_fields)

STAGES = ("lidar", "cilp", "projector", "rgb2lidar")
#: the form's checkbox of each stage (a list field with choices crashes the App's form)
STAGE_LABELS = {
    "lidar": "lidar: the LiDAR classifier",
    "cilp": "cilp: contrastive RGB-LiDAR pre-training",
    "projector": "projector: RGB embedding -> LiDAR embedding",
    "rgb2lidar": "rgb2lidar: the RGB -> LiDAR classifier",
}
DEFAULTS = dict(epochs=None, batch_size=None, preset="auto", device="auto", precision="auto",
                data="auto", wandb=False, lidar_tower="locked", run_prefix="", train_tag="train", val_tag="val", overwrite=False,
                resume=False, lidar_from=None)


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

        p = params_with_defaults(ctx, DEFAULTS)
        results = train_cilp(ctx.dataset, stages=chosen_stages(ctx.params), epochs=p["epochs"], batch_size=p["batch_size"],
                             preset=p["preset"], device=p["device"], precision=p["precision"], data=p["data"],
                             wandb=p["wandb"], lidar_tower=p["lidar_tower"],
                             run_prefix=p["run_prefix"], train_tag=p["train_tag"], val_tag=p["val_tag"],
                             overwrite=p["overwrite"], resume=p["resume"], lidar_from=server_path("lidar_from", p["lidar_from"]),
                             progress=progress_reporter(ctx))
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
    return [stage for stage in STAGES if params.get(stage_param(stage), True)]


def train_cilp_form(ctx) -> types.Object:
    inputs = types.Object()
    inputs.view("stages_header", types.Header(label="Stages", description="a later stage alone reuses this "
                                                      "dataset's runs of the earlier ones"))
    for stage in STAGES:
        inputs.bool(stage_param(stage), default=True, label=STAGE_LABELS[stage], view=types.CheckboxView())
    if not chosen_stages(ctx.params):
        nothing = inputs.view("no_stage", types.Error(label="Tick at least one stage"))
        nothing.invalid, nothing.error_message = True, "stages: tick at least one stage"
    inputs.int("epochs", min=1, label="Epochs of every stage", description="default: the preset's")
    inputs.int("batch_size", min=1, label="Batch size of every stage", description="default: the preset's")
    inputs.enum("preset", ["auto", "cpu", "gpu"], default=DEFAULTS["preset"], label="Preset",
                description="auto: the GPU protocol on CUDA, the CPU preset otherwise", view=types.RadioGroup())
    training_hardware_fields(inputs, DEFAULTS)
    inputs.enum("lidar_tower", ["locked", "trained"], default=DEFAULTS["lidar_tower"], label="CILP's LiDAR encoder",
                description="locked: the LiDAR classifier, frozen (the RGB side learns the classes); trained: "
                            "learned with the RGB encoder, as the reference", view=types.RadioGroup())
    lidar_from = inputs.str("lidar_from", label="Import the assessment's lidar_cnn.pt as the lidar stage",
                            description="a path on the server (optional): NVIDIA's pretrained LiDAR classifier "
                                        "instead of training one")
    flag_outside_roots(lidar_from, "lidar_from", ctx.params.get("lidar_from"))
    inputs.bool("wandb", default=False, label="Track with wandb (offline unless WANDB_API_KEY is set)")
    inputs.str("run_prefix", default="", label="Run name prefix", description="runs are named PREFIX + stage")
    split_tag_fields(ctx, inputs, DEFAULTS)
    inputs.bool("overwrite", default=False, label="Replace runs of the same names")
    inputs.bool("resume", default=False, label="Train runs of the same names further",
                description="continue an interrupted run, or train a finished one up to the epochs given")
    return inputs
