"""Runs: the registry of a dataset's runs and the shipped checkpoints, training on a dataset's
split tags, the CILP pipeline of linked runs, and the run table the App's runs panel shows.

    from cilp_plugin.runs import find_run, recorded_runs, train_cilp, train_on_dataset
    result = train_on_dataset(dataset, ModelConfig(family="late"), train_config)
    recorded_runs(dataset)   # {"late": Path(".../late")}
"""

from .._exports import lazy_exports

_EXPORTS = {
    "registry": ("SHIPPED_DIR", "RUN_METHOD", "default_runs_dir", "dataset_runs_dir", "check_run_name",
                 "check_own_run_name", "record_run", "recorded_runs", "find_run", "loaded_run",
                 "shipped_checkpoints_dir", "shipped_checkpoints", "shipped_checkpoint"),
    "training": ("PARTIAL", "train_on_dataset", "import_on_dataset"),
    "request": ("CILPRequest", "Option", "options", "parse_stages", "TRAINING_OPTIONS"),
    "pipeline": ("train_cilp",),
    "classes": ("head_of", "classes_notice", "run_classes", "class_mismatch"),
    "table": ("training_runs", "scheduled_operations", "run_curves", "run_config", "train_further"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
