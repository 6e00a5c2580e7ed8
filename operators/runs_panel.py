import fiftyone.operators as foo
import fiftyone.operators.types as types

RUN_COLUMNS = {"run": "Run", "kind": "Kind", "status": "Status", "epochs": "Epochs", "best_epoch": "Best epoch",
               "val_loss": "Val loss", "val_metric": "Val metric", "device": "Device", "precision": "Precision",
               "data": "Data"}
OPERATION_COLUMNS = {"operation": "Operation", "state": "State", "progress": "Progress", "label": "Stage / epoch",
                     "queued": "Queued (UTC)", "error": "Error"}
NO_COMPARISON = "none"
#: the panel refreshes itself this often (ms): while an operation is queued or running, and otherwise
REFRESH_MS = {"watching": 3000, "idle": 10000}
UNFINISHED = ("scheduled", "queued", "running")


class RunsPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="cilp_runs",
            label="CILP runs",
            help_markdown="The dataset's training runs and its scheduled operations (refreshed every few "
                          "seconds); a run's loss curves beside another's; apply a run.",
            surfaces="grid",
        )

    def on_load(self, ctx):
        self.refresh(ctx)

    def refresh(self, ctx):
        from cilp_plugin.run_table import run_curves, scheduled_operations, training_runs

        runs = training_runs(ctx.dataset)
        ctx.panel.set_data("runs", runs)
        operations = scheduled_operations(ctx.dataset)
        ctx.panel.set_data("operations", operations)
        ctx.panel.set_state("watching", any(row["state"] in UNFINISHED for row in operations))
        names = [row["run"] for row in runs]
        ctx.panel.set_state("run_names", names)  # panel data is write-only: render reads the state
        chosen = ctx.panel.state.get("chosen")
        if chosen not in names:
            chosen = names[-1] if names else None
            ctx.panel.set_state("chosen", chosen)
        other = ctx.panel.state.get("compare")
        folders = {row["run"]: row["folder"] for row in runs}
        curves = run_curves(folders[chosen]) if chosen else []
        if other in folders and other != chosen:
            curves += run_curves(folders[other], prefix=f"{other}: ", dash="dash")
        ctx.panel.set_data("curves", curves)

    def choose(self, ctx):
        ctx.panel.set_state("chosen", ctx.params.get("value"))
        self.refresh(ctx)

    def choose_compare(self, ctx):
        ctx.panel.set_state("compare", ctx.params.get("value"))
        self.refresh(ctx)

    def apply_chosen(self, ctx):
        chosen = ctx.panel.state.get("chosen")
        if chosen:
            ctx.prompt("@cilp/multimodal/apply_model", params={"source": "run", "run": chosen})

    def render(self, ctx):
        panel = types.Object()
        panel.btn("refresh", label="Refresh", on_click=self.refresh, variant="outlined")
        interval = REFRESH_MS["watching" if ctx.panel.state.get("watching") else "idle"]
        panel.view("auto_refresh", types.TimerView(interval=interval, on_interval=self.refresh))
        panel.md("**Training runs**", name="runs_heading")
        panel.list("runs", types.Object(), view=table(RUN_COLUMNS))
        names = ctx.panel.state.get("run_names") or []
        if names:
            choices = types.DropdownView()
            for name in names:
                choices.add_choice(name, label=name)
            panel.enum("chosen", names, label="Curves of", view=choices, on_change=self.choose)
            if len(names) > 1:
                others = types.DropdownView()
                for name in [NO_COMPARISON, *names]:
                    others.add_choice(name, label=name)
                panel.enum("compare", [NO_COMPARISON, *names], label="Compare with (dashed)", view=others,
                           on_change=self.choose_compare)
            panel.plot("curves", layout={"title": "loss per epoch", "xaxis": {"title": "epoch"},
                                         "yaxis": {"title": "loss"}, "height": 320})
            panel.btn("apply", label="Apply this run", on_click=self.apply_chosen, variant="contained")
        panel.md("**Scheduled operations** (updated every few seconds)", name="operations_heading")
        panel.list("operations", types.Object(), view=table(OPERATION_COLUMNS))
        return types.Property(panel, view=types.GridView(orientation="vertical", height=100, width=100))


def table(columns: dict) -> types.TableView:
    view = types.TableView()
    for key, label in columns.items():
        view.add_column(key, label=label)
    return view
