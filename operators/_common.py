"""Helpers shared by the operators: defaults, progress, form validation, and the paths they accept."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cilp_plugin.runs.request import TRAINING_OPTIONS


def params_with_defaults(ctx, defaults: dict[str, Any]) -> dict[str, Any]:
    """``ctx.params`` over ``defaults``: SDK calls do not get the form's defaults."""
    given = {k: v for k, v in ctx.params.items() if v is not None and k in defaults}
    return {**defaults, **given}


def progress_reporter(ctx, min_interval: float = 0.5) -> Callable[[float, str], None]:
    """A throttled ``progress(fraction, label)`` for library calls.

    A failed progress update is logged and ignored: it must never end a long run.
    """
    last = [0.0]

    def report(fraction: float, label: str) -> None:
        now = time.monotonic()
        if fraction < 1 and now - last[0] < min_interval:
            return
        last[0] = now
        try:
            ctx.set_progress(progress=float(fraction), label=label)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            print(f"progress update failed: {exc}")

    return report


def option_field(inputs, option, **about):
    """The form field of a training option (:class:`cilp_plugin.runs.Option`): its label, help,
    default and choices; ``about`` overrides the label or description."""
    import fiftyone.operators.types as types

    about = {"label": option.label, "description": option.help, **about}
    if option.choices:
        return inputs.enum(option.name, list(option.choices), default=option.default, view=types.RadioGroup(),
                           **about)
    if option.kind is bool:
        return inputs.bool(option.name, default=option.default, **about)
    if option.kind is int:
        return inputs.int(option.name, default=option.default, min=option.minimum, **about)
    return inputs.str(option.name, default=option.default, **about)


def training_hardware_fields(inputs) -> None:
    """Device, precision and where the pairs live: the same three choices on every training form."""
    for option in TRAINING_OPTIONS:
        if option.name in ("device", "precision", "data"):
            option_field(inputs, option)


def summary_output():
    """The result form of operators that report one line of text."""
    import fiftyone.operators.types as types

    outputs = types.Object()
    outputs.str("summary", label="Result")
    return types.Property(outputs)


def file_path(value) -> str | None:
    """A path typed into a text field or picked in a FileExplorerView (a dict)."""
    if isinstance(value, dict):
        return value.get("absolute_path")
    return value or None


def server_path(field: str, value) -> str | None:
    """A path sent by the App (typed or picked), resolved and confined to the folders the
    operators may use (:mod:`cilp_plugin.service.paths`); ``None`` when empty."""
    from cilp_plugin.service import confine

    path = file_path(value)
    return None if path is None else str(confine(field, path))


def outside_roots(field: str, value) -> str | None:
    """Why a path from the App is refused (it lies outside the allowed folders), or None."""
    from cilp_plugin.service import PathNotAllowed

    try:
        server_path(field, value)
    except PathNotAllowed as exc:
        return str(exc)
    return None


def flag_outside_roots(prop, field: str, value) -> bool:
    """Show a form field invalid when its path lies outside the allowed folders; True if it does."""
    problem = outside_roots(field, value)
    if problem:
        prop.invalid, prop.error_message = True, problem
    return problem is not None


def class_fields(ctx, inputs, runs: dict | None = None) -> None:
    """A read-only line of the dataset's classes (and the head that tells them apart), one of its input
    sizes, and a warning for each of ``runs`` (name -> folder: those the operator would read) whose
    classes are not the dataset's."""
    import fiftyone.operators.types as types

    from cilp_plugin.dataset import being_written, dataset_classes, dataset_sizes
    from cilp_plugin.runs.classes import class_mismatch, classes_notice, sizes_notice

    if not ctx.dataset_name or being_written(ctx.dataset_name):  # ctx.dataset would reload it under that write
        return
    inputs.view("classes", types.Notice(label=classes_notice(dataset_classes(ctx.dataset))))
    inputs.view("sizes", types.Notice(label=sizes_notice(dataset_sizes(ctx.dataset))))
    for name, folder in (runs or {}).items():
        problem = class_mismatch(ctx.dataset, name, folder)
        if problem:
            inputs.view(f"classes_of_{name}", types.Warning(label=problem))


def split_tag_fields(ctx, inputs) -> None:
    """The "train on" / "select on" tag fields, shown invalid when no pair carries the tag."""
    fields = {option: option_field(inputs, option, description=None) for option in TRAINING_OPTIONS
              if option.name in ("train_tag", "val_tag")}
    if ctx.dataset is None or ctx.dataset.media_type != "group":
        return
    tags = ctx.dataset.select_group_slices("rgb").count_sample_tags()
    for option, prop in fields.items():
        tag = ctx.params.get(option.name) or option.default
        if not tags.get(tag):
            prop.invalid = True
            prop.error_message = f"No pairs are tagged '{tag}': run 'create splits' first"
