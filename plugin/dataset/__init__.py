"""The FiftyOne side of the data: a folder into a grouped dataset (rgb | depth | lidar), split
tags, the arrays the models train on, the views the other layers read through, and who may
write a dataset (its lease; the owners of what a process leaves behind).

    from cilp_plugin.dataset import create_splits, from_dataset, load_dataset
    result = load_dataset("synthetic", name="cilp-assessment", n_per_class=100)
    create_splits(dataset, val=0.2, seed=42)
    arrays = from_dataset(dataset, "train")

``ingest.ingest(folder, name)`` ingests a folder (the module and the function share the name).
The arrays of a raw folder (``from_folder``, ``load_pairs``) and the views need no FiftyOne.
"""

from .._exports import lazy_exports

_EXPORTS = {
    "ingest": ("DEFAULT_NAME", "SLICES", "IngestResult"),
    "splits": ("SPLITS", "Split", "SplitResult", "make_split", "create_splits", "apply_split", "read_split",
               "check_exclude_tags"),
    "arrays": ("PairArrays", "MissingFilesError", "load_pairs", "from_folder", "from_dataset"),
    "sources": ("SOURCES", "load_dataset", "resolve_folder"),
    "views": ("all_slices", "with_tags", "default_cache_dir", "dataset_classes", "dataset_sizes"),
    "leases": ("dataset_lease", "being_written"),
    "owners": ("owner", "owner_state", "describe_owner"),
    "colours": ("CLASS_COLOURS", "OTHER_COLOURS", "class_colours", "colour_by_class", "field_colours"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
