import fiftyone.operators as foo
import fiftyone.operators.types as types

from cilp_plugin.runs.request import TRAINING_OPTIONS
from mm_models.choices import DEFAULT_FUSION, DOWNSAMPLE_MODES, FAMILIES, FUSED_FAMILIES, FUSION_MODES

from ._common import (
    class_fields,
    option_field,
    params_with_defaults,
    progress_reporter,
    split_tag_fields,
    training_hardware_fields,
)

TRAINING = {option.name: option for option in TRAINING_OPTIONS}
DEFAULTS = dict(family="intermediate", fusion=None, downsample="maxpool", epochs=None, lr=None, batch_size=None,
                name=None, **{name: option.default for name, option in TRAINING.items() if name != "runs_dir"})


class TrainFusion(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="train_fusion",
            label="CILP: train a fusion model",
            description="Train an RGB + LiDAR classifier on the dataset's split tags (GPU when present)",
            icon="/assets/icon.svg",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        return types.Property(train_form(ctx), view=types.View(label="Train a fusion model"))

    def execute(self, ctx):
        from cilp_plugin.runs import train_on_dataset
        from mm_models.presets import train_config

        p = params_with_defaults(ctx, DEFAULTS)
        model = model_config(p)
        train = train_config("fusion", p["preset"], epochs=p["epochs"], lr=p["lr"], batch_size=p["batch_size"],
                             device=p["device"], precision=p["precision"], data=p["data"], seed=p["seed"],
                             wandb=p["wandb"])
        result = train_on_dataset(ctx.dataset, model, train, train_tag=p["train_tag"], val_tag=p["val_tag"],
                                  name=p["name"], overwrite=p["overwrite"], resume=p["resume"],
                                  progress=progress_reporter(ctx))
        best = result.best
        return {
            "run": result.run_dir.name,
            "run_dir": str(result.run_dir),
            "best_epoch": best["epoch"],
            "val_loss": best["val/loss"],
            "val_accuracy": best["val/accuracy"],
            "params": result.manifest["params"],
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("run", label="Run (use it in 'apply model')")
        outputs.float("val_accuracy", label="Validation accuracy at the best epoch")
        outputs.float("val_loss", label="Validation loss at the best epoch")
        outputs.str("run_dir", label="Run folder")
        return types.Property(outputs)


def model_config(params: dict):
    """The ``ModelConfig`` the form's (or an SDK call's) values describe."""
    from mm_models import ModelConfig

    return ModelConfig(family=params["family"], downsample=params["downsample"],
                       fusion=params["fusion"] or DEFAULT_FUSION.get(params["family"], "concat"))


def resumed_run(ctx) -> dict:
    """The recorded run this training would continue (name -> folder): none unless resume is ticked."""
    from cilp_plugin.runs import recorded_runs
    from mm_models.stages import default_run_name

    if ctx.dataset is None or not ctx.params.get("resume"):
        return {}
    try:
        name = ctx.params.get("name") or default_run_name(model_config(params_with_defaults(ctx, DEFAULTS)))
    except ValueError:  # values the training refuses name no run
        return {}
    recorded = recorded_runs(ctx.dataset)
    return {name: recorded[name]} if name in recorded else {}


def train_form(ctx) -> types.Object:
    inputs = types.Object()
    class_fields(ctx, inputs, resumed_run(ctx))
    inputs.enum("family", list(FAMILIES), default=DEFAULTS["family"], label="Model family",
                description="late / intermediate / early fusion, or one modality alone",
                view=types.DropdownView())
    family = ctx.params.get("family", DEFAULTS["family"])
    if family in FUSED_FAMILIES:
        inputs.enum("fusion", list(FUSION_MODES), default=DEFAULT_FUSION[family], label="Fusion",
                    view=types.RadioGroup())
    inputs.enum("downsample", list(DOWNSAMPLE_MODES), default=DEFAULTS["downsample"], label="Downsampling",
                view=types.RadioGroup())
    option_field(inputs, TRAINING["preset"])
    inputs.int("epochs", min=1, label="Epochs", description="default: the preset's")
    inputs.float("lr", min=0, label="Learning rate", description="default: the preset's")
    inputs.int("batch_size", min=1, label="Batch size", description="default: the preset's")
    training_hardware_fields(inputs)
    option_field(inputs, TRAINING["seed"])
    option_field(inputs, TRAINING["wandb"])
    split_tag_fields(ctx, inputs)
    inputs.str("name", label="Run name", description="default: from the model, e.g. intermediate_add")
    inputs.bool("overwrite", default=False, label="Replace a run of the same name")
    inputs.bool("resume", default=False, label="Train a run of the same name further",
                description="continue an interrupted run, or train a finished one up to the epochs given")
    return inputs
