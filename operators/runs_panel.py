import fiftyone.operators as foo
import fiftyone.operators.types as types

RUN_COLUMNS = {"run": "Run", "kind": "Kind", "classes": "Classes", "status": "Status", "epochs": "Epochs",
               "best_epoch": "Best epoch", "val_loss": "Val loss", "val_metric": "Val metric", "device": "Device",
               "precision": "Precision", "preset": "Preset", "data": "Data"}
OPERATION_COLUMNS = {"operation": "Operation", "state": "State", "progress": "Progress", "label": "Stage / epoch",
                     "queued": "Queued (UTC)", "error": "Error"}
NO_COMPARISON = "none"
MODEL_EVALUATION_PANEL = "model_evaluation_panel_builtin"
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
                          "seconds); a run's loss curves beside another's; apply a run, train it further, "
                          "open its evaluation; a CILP run's joint map of both modalities (select points "
                          "to show their pairs).",
            surfaces="grid",
        )

    def on_load(self, ctx):
        self.refresh(ctx)

    def refresh(self, ctx):
        from cilp_plugin.dataset import being_written, dataset_classes
        from cilp_plugin.runs import classes_notice, run_config, run_curves, scheduled_operations, training_runs
        from cilp_plugin.writeback import applied_runs

        if being_written(ctx.dataset_name):  # ctx.dataset would reload it under that write: next tick
            return
        ctx.panel.set_state("classes_notice", classes_notice(dataset_classes(ctx.dataset)))
        runs = training_runs(ctx.dataset)
        ctx.panel.set_data("runs", runs)
        operations = scheduled_operations(ctx.dataset)
        ctx.panel.set_data("operations", operations)
        unfinished = [row["id"] for row in operations if row["state"] in UNFINISHED]
        completed = {row["id"] for row in operations if row["state"] == "completed"}
        if completed & set(ctx.panel.state.get("unfinished") or []):
            ctx.ops.reload_dataset()  # a scheduled run or apply completed: show the fields it wrote
        ctx.panel.set_state("unfinished", unfinished)
        ctx.panel.set_state("watching", bool(unfinished))
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
        ctx.panel.set_state("config", run_config(folders[chosen]) if chosen else "")
        ctx.panel.set_state("evaluation", f"eval_{chosen}" if f"eval_{chosen}" in ctx.dataset.list_evaluations()
                            else None)
        applied = applied_runs(ctx.dataset)
        if applied != ctx.panel.state.get("applied"):  # the map is drawn again only when it changes
            ctx.panel.set_state("applied", applied)
            self.draw_joint_map(ctx)

    def draw_joint_map(self, ctx):
        from cilp_plugin.writeback import joint_map_traces

        applied = ctx.panel.state.get("applied") or []
        mapped = ctx.panel.state.get("mapped")
        if mapped not in applied:
            mapped = applied[0] if applied else None
            ctx.panel.set_state("mapped", mapped)
        if mapped:
            ctx.panel.set_data("joint_map", joint_map_traces(ctx.dataset, mapped, ctx.panel.state.get("linked") or []))

    def choose(self, ctx):
        ctx.panel.set_state("chosen", ctx.params.get("value"))
        self.refresh(ctx)

    def choose_mapped(self, ctx):
        ctx.panel.set_state("mapped", ctx.params.get("value"))
        ctx.panel.set_state("linked", [])
        self.draw_joint_map(ctx)

    def choose_compare(self, ctx):
        ctx.panel.set_state("compare", ctx.params.get("value"))
        self.refresh(ctx)

    def apply_chosen(self, ctx):
        chosen = ctx.panel.state.get("chosen")
        if chosen:
            ctx.prompt("@cilp/multimodal/apply_model", params={"source": "run", "run": chosen})

    def train_chosen_further(self, ctx):
        from cilp_plugin.runs import train_further

        chosen = ctx.panel.state.get("chosen")
        if chosen:
            operator, params = train_further(ctx.dataset, chosen)
            ctx.prompt(f"@cilp/multimodal/{operator}", params=params)

    def open_evaluation(self, ctx):
        """FiftyOne's Model Evaluation panel, beside this one: it lists the run's evaluation (it opens on
        its list whatever state it is given)."""
        if ctx.panel.state.get("evaluation"):
            ctx.ops.open_panel(MODEL_EVALUATION_PANEL, layout="horizontal")

    def show_selected_pairs(self, ctx):
        """Points chosen on the joint map (lasso or box): the App shows their pairs, the map links them."""
        import fiftyone as fo

        pair_ids = sorted({point["id"] for point in ctx.params.get("data") or [] if point.get("id")})
        if not pair_ids:  # plotly also reports an empty selection when the map is drawn again
            return
        ctx.panel.set_state("linked", pair_ids)
        ctx.ops.set_view(ctx.dataset.match(fo.ViewField("pair_id").is_in(pair_ids)))
        self.draw_joint_map(ctx)

    def render(self, ctx):
        panel = types.Object()
        panel.btn("refresh", label="Refresh", on_click=self.refresh, variant="outlined")
        interval = REFRESH_MS["watching" if ctx.panel.state.get("watching") else "idle"]
        panel.view("auto_refresh", types.TimerView(interval=interval, on_interval=self.refresh))
        if ctx.panel.state.get("classes_notice"):  # a view shows the state of its name: the line, not the notice
            panel.md(f"**Dataset classes**: {ctx.panel.state.get('classes_notice')}", name="classes")
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
            if ctx.panel.state.get("config"):
                panel.md(ctx.panel.state.get("config"), name="config")
            actions = panel.h_stack("actions", align_x="left", gap=2)
            actions.btn("apply", label="Apply this run", on_click=self.apply_chosen, variant="contained")
            actions.btn("train_further", label="Train it further", on_click=self.train_chosen_further,
                        variant="outlined")
            if ctx.panel.state.get("evaluation"):
                actions.btn("open_evaluation", label="Open its evaluation", on_click=self.open_evaluation,
                            variant="outlined")
        applied = ctx.panel.state.get("applied") or []
        if applied:
            panel.md("**Joint map**: a CILP run's RGB and LiDAR embeddings in one space (colour: class, "
                     "marker: modality); select points (lasso or box) to show their pairs in the grid",
                     name="joint_map_heading")
            maps = types.DropdownView()
            for name in applied:
                maps.add_choice(name, label=name)
            panel.enum("mapped", applied, label="Joint map of", view=maps, on_change=self.choose_mapped)
            panel.plot("joint_map", on_selected=self.show_selected_pairs,
                       layout={"dragmode": "lasso", "height": 420, "xaxis": {"visible": False},
                               "yaxis": {"visible": False}, "legend": {"orientation": "h"}})
        panel.md("**Scheduled operations** (updated every few seconds)", name="operations_heading")
        panel.list("operations", types.Object(), view=table(OPERATION_COLUMNS))
        return types.Property(panel, view=types.GridView(orientation="vertical", height=100, width=100))


def table(columns: dict) -> types.TableView:
    view = types.TableView()
    for key, label in columns.items():
        view.add_column(key, label=label)
    return view
