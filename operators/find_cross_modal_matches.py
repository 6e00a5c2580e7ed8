import fiftyone.operators as foo
import fiftyone.operators.types as types

DEFAULTS = dict(k=5, run="cilp")


class FindCrossModalMatches(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="find_cross_modal_matches",
            label="CILP: find cross-modal matches",
            description="Show the LiDAR point clouds nearest to the selected RGB images in CILP's shared "
                        "space, or the RGB images nearest to the selected LiDAR samples",
            icon="/assets/icon.svg",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not ctx.selected:
            warning = inputs.view("selection", types.Warning(
                label="Select samples first", description="select RGB images (or LiDAR / depth samples) in the grid"))
            warning.invalid = True
        inputs.int("k", default=DEFAULTS["k"], min=1, label="Matches to show")
        inputs.str("run", default=DEFAULTS["run"], label="CILP run", description="an applied cilp run of this dataset")
        return types.Property(inputs, view=types.View(label="Find cross-modal matches"))

    def execute(self, ctx):
        from cilp_plugin.writeback import find_cross_modal_matches

        k = ctx.params.get("k") or DEFAULTS["k"]
        run = ctx.params.get("run") or DEFAULTS["run"]
        view = find_cross_modal_matches(ctx.dataset, list(ctx.selected), k=k, run=run)
        sorted_by = grid_sort_field(ctx)
        if sorted_by in view.get_field_schema():
            view = view.exclude_fields(sorted_by)
        ctx.ops.set_view(view)
        return {"matches": view.values("pair_id"), "slice": view.values("group.name")[0] if len(view) else None}


def grid_sort_field(ctx) -> str | None:
    """The field the App's grid is sorted by ("Sort by"), if any.

    The App sorts every view it shows by that field, after the view's own stages, so it would
    reorder the matches; a view without the field leaves the App nothing to sort by, and the
    matches keep their order (nearest first).
    """
    sort = (ctx.request_params.get("extended") or {}).get("fiftyone.core.stages.SortBy") or {}
    field = sort.get("field_or_expr")
    return field if isinstance(field, str) else None
