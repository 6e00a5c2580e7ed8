import fiftyone.operators as foo
import fiftyone.operators.types as types

from plugin.writeback import EMBEDDING_MAPS  # fiftyone and numpy only: cheap at load

from ._common import params_with_defaults, progress_reporter, summary_output

DEFAULTS = dict(run=None, field=None, tags=None, eval_tag="val", embedding_map="pca", device="auto")


class ApplyModel(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="apply_model",
            label="CILP: apply a trained model",
            description="Write a run's predictions and embeddings to every slice, evaluate them "
                        "(confusion matrix) and map the embeddings (Embeddings panel)",
            icon="/assets/icon.svg",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        return types.Property(apply_form(ctx), view=types.View(label="Apply a trained model"))

    def execute(self, ctx):
        from plugin.writeback import apply_model

        p = params_with_defaults(ctx, DEFAULTS)
        if not p["run"]:
            raise ValueError("run: choose a run of this dataset or give a run folder")
        result = apply_model(ctx.dataset, p["run"], field=p["field"], tags=p["tags"], eval_tag=p["eval_tag"],
                             embedding_map=p["embedding_map"], device=p["device"], progress=progress_reporter(ctx))
        ctx.trigger("reload_dataset")
        return {"field": result.field, "embedding_field": result.embedding_field, "eval_key": result.eval_key,
                "brain_key": result.brain_key, "predicted": result.predicted,
                "accuracy": result.report["accuracy"] if result.report else None, "summary": result.summary()}

    def resolve_output(self, ctx):
        return summary_output()


def apply_form(ctx) -> types.Object:
    inputs = types.Object()
    runs = sorted(ctx.dataset.info.get("cilp_runs", {})) if ctx.dataset is not None else []
    choices = types.AutocompleteView()
    for run in runs:
        choices.add_choice(run, label=run)
    inputs.str("run", required=True, default=runs[-1] if runs else None, label="Run", view=choices,
               description="a run of this dataset, or a run folder" if runs
               else "no runs recorded on this dataset yet: give a run folder, or train first")
    inputs.str("field", label="Prediction field", description="default: the run's name")
    inputs.list("tags", types.String(), label="Only pairs tagged", description="default: every pair")
    inputs.str("eval_tag", default=DEFAULTS["eval_tag"], label="Evaluate on pairs tagged")
    inputs.enum("embedding_map", [*EMBEDDING_MAPS, "none"], default=DEFAULTS["embedding_map"],
                label="Embedding map", view=types.RadioGroup(),
                description="2-D layout of the embeddings for the Embeddings panel (umap needs umap-learn)")
    inputs.enum("device", ["auto", "cpu", "cuda"], default="auto", label="Device", view=types.RadioGroup())
    return inputs
