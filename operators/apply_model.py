import fiftyone.operators as foo
import fiftyone.operators.types as types

from cilp_plugin.writeback import APPLICABLE_KINDS, EMBEDDING_MAPS  # fiftyone and numpy only: cheap at load

from ._common import class_fields, params_with_defaults, progress_reporter, summary_output

DEFAULTS = dict(source="run", run=None, checkpoint=None, field=None, tags=None, eval_tag="val",
                embedding_map="pca", device="auto")
SOURCES = {"run": "A run of this dataset", "checkpoint": "A shipped checkpoint"}


class ApplyModel(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="apply_model",
            label="CILP: apply a trained model",
            description="Write the predictions and embeddings of a run or a shipped checkpoint to every "
                        "slice, evaluate them (confusion matrix) and map the embeddings (Embeddings panel)",
            icon="/assets/icon.svg",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        return types.Property(apply_form(ctx), view=types.View(label="Apply a trained model"))

    def execute(self, ctx):
        from cilp_plugin.runs import shipped_checkpoint
        from cilp_plugin.writeback import apply_run

        p = params_with_defaults(ctx, DEFAULTS)
        source = ctx.params.get("source") or ("checkpoint" if p["checkpoint"] else "run")  # SDK calls name one
        run = shipped_checkpoint(p["checkpoint"]) if source == "checkpoint" else p["run"]
        if not run:
            raise ValueError("run: choose a run of this dataset (or give a run folder), or a shipped checkpoint")
        if source != "checkpoint":
            run = confined_run(ctx.dataset, run)
        result = apply_run(ctx.dataset, run, field=p["field"], tags=p["tags"], eval_tag=p["eval_tag"],
                           embedding_map=p["embedding_map"], device=p["device"], progress=progress_reporter(ctx))
        ctx.trigger("reload_dataset")
        return {"summary": result.summary(), **{key: getattr(result, key, None) for key in (
            "field", "embedding_field", "eval_key", "brain_key", "predicted", "fields", "brain_keys")},
            "accuracy": result.report["accuracy"] if getattr(result, "report", None) else None}

    def resolve_output(self, ctx):
        return summary_output()


def confined_run(dataset, run: str) -> str:
    """A run recorded on the dataset, or a run folder inside the folders the operators may use."""
    from cilp_plugin.runs import recorded_runs
    from cilp_plugin.service import PathNotAllowed, allowed_roots, confine, describe_roots

    recorded = recorded_runs(dataset)
    if run in recorded:
        return run
    roots = allowed_roots()
    try:
        return str(confine("run", run, roots))
    except PathNotAllowed:
        known = ", ".join(sorted(recorded)) or "none yet"
        raise PathNotAllowed(f"run {run!r}: not a run folder, nor a run of dataset '{dataset.name}' ({known}): "
                             f"the operators open run folders only {describe_roots(roots)}") from None


def chosen_run(ctx, runs: list[str], source: str) -> dict:
    """The run the form applies, name -> folder: a shipped checkpoint or a run recorded on the dataset
    (none for a run folder typed in: it is read once applied)."""
    from cilp_plugin.runs import recorded_runs, shipped_checkpoint, shipped_checkpoints

    if source == "checkpoint":
        shipped = shipped_checkpoints(APPLICABLE_KINDS)
        name = ctx.params.get("checkpoint") or (shipped[0] if shipped else None)
        return {name: shipped_checkpoint(name)} if name in shipped else {}
    name = ctx.params.get("run") or (runs[-1] if runs else None)
    return {name: recorded_runs(ctx.dataset)[name]} if name in runs else {}


def apply_form(ctx) -> types.Object:
    from cilp_plugin.runs import recorded_runs, shipped_checkpoints

    inputs = types.Object()
    runs = sorted(recorded_runs(ctx.dataset)) if ctx.dataset is not None else []
    source = ctx.params.get("source") or ("run" if runs else "checkpoint")
    sources = types.RadioGroup()
    for value, label in SOURCES.items():
        sources.add_choice(value, label=label)
    inputs.enum("source", list(SOURCES), default=source, label="Apply", view=sources)
    if source == "checkpoint":
        shipped = shipped_checkpoints(APPLICABLE_KINDS)
        choices = types.DropdownView()
        for name in shipped:
            choices.add_choice(name, label=name)
        inputs.enum("checkpoint", shipped, required=True, default=shipped[0] if shipped else None,
                    label="Shipped checkpoint", view=choices,
                    description="trained on the generated data (checkpoints/); no training needed")
    else:
        choices = types.AutocompleteView()
        for run in runs:
            choices.add_choice(run, label=run)
        inputs.str("run", required=True, default=runs[-1] if runs else None, label="Run", view=choices,
                   description="a run of this dataset, or a run folder" if runs
                   else "no runs recorded on this dataset yet: give a run folder, or train first")
    class_fields(ctx, inputs, chosen_run(ctx, runs, source))
    inputs.str("field", label="Prediction field", description="default: the run's name")
    tag_choices = types.DropdownView(multiple=True)  # a bare list field reads "No only pairs tagged added yet"
    for tag in sorted(ctx.dataset.distinct("tags")) if ctx.dataset is not None else []:
        tag_choices.add_choice(tag, label=tag)
    inputs.list("tags", types.String(), label="Only pairs tagged", description="default: every pair",
                view=tag_choices)
    inputs.str("eval_tag", default=DEFAULTS["eval_tag"], label="Evaluate on pairs tagged")
    inputs.enum("embedding_map", [*EMBEDDING_MAPS, "none"], default=DEFAULTS["embedding_map"],
                label="Embedding map", view=types.RadioGroup(),
                description="2-D layout of the embeddings for the Embeddings panel (umap needs umap-learn)")
    inputs.enum("device", ["auto", "cpu", "cuda"], default="auto", label="Device", view=types.RadioGroup())
    return inputs
