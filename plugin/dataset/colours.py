"""Each class's colour, the same everywhere: the App's grid and sidebar (the dataset's saved colour
scheme), the report's pictures and the runs panel's joint map.

    colour_by_class(dataset, ["ground_truth"], ["cube", "sphere", "cylinder"])
"""

from __future__ import annotations

import fiftyone as fo

CLASS_COLOURS = {"cube": "#ff7f0e", "sphere": "#1f77b4"}  # matplotlib's tab:orange, tab:blue; also the runs panel's
#: the colours of the other classes, in class order (the rest of matplotlib's tab10)
OTHER_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def class_colours(classes: list[str]) -> dict[str, str]:
    """Each class's colour: cube and sphere their own, the others :data:`OTHER_COLOURS` in turn."""
    others = [c for c in classes if c not in CLASS_COLOURS]
    return {c: CLASS_COLOURS.get(c) or OTHER_COLOURS[others.index(c) % len(OTHER_COLOURS)] for c in classes}


def colour_by_class(dataset: fo.Dataset, fields: list[str], classes: list[str]) -> None:
    """Colour the label fields ``fields`` (``fo.Classification``) by class in the App: each class its
    :func:`class_colours` colour. Merged into the dataset's saved colour scheme (other fields' entries
    kept); the App then colours every field by value."""
    scheme = dataset.app_config.color_scheme or fo.ColorScheme()
    kept = [entry for entry in scheme.fields or [] if entry.get("path") not in fields]
    values = [{"value": name, "color": colour} for name, colour in class_colours(classes).items()]
    scheme.fields = kept + [{"path": field, "colorByAttribute": "label", "valueColors": values} for field in fields]
    scheme.color_by = "value"
    dataset.app_config.color_scheme = scheme
    dataset.save()


def field_colours(dataset: fo.Dataset, field: str) -> dict[str, str]:
    """The class -> colour the dataset's saved colour scheme gives the label field ``field`` (empty if none)."""
    scheme = dataset.app_config.color_scheme
    entry = next((e for e in (scheme.fields or []) if e.get("path") == field), {}) if scheme else {}
    return {item["value"]: item["color"] for item in entry.get("valueColors") or []}
