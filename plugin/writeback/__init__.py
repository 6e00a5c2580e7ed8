"""Runs back into the dataset: a classifier's predictions and evaluation, a CILP run's embeddings,
pair scores and similarity index, embedding maps, all written through staged swaps; and
pictures of what was written.

    from cilp_plugin.writeback import apply_run, find_cross_modal_matches, write_pictures
    apply_run(dataset, "late")    # a classifier run: predictions, evaluation, embedding map
    apply_run(dataset, "cilp")    # a CILP run: embeddings, pair scores, maps, similarity index
"""

from .._exports import lazy_exports

_EXPORTS = {
    "apply": ("APPLICABLE_KINDS", "apply_run"),
    "classifier": ("ApplyResult", "apply_model"),
    "cilp": ("CILPApplyResult", "apply_cilp", "find_cross_modal_matches", "JointMap", "joint_map", "applied_runs"),
    "maps": ("EMBEDDING_MAPS", "check_embedding_map"),
    "staging": ("StagedWrite", "check_replaceable", "recover"),
    "pictures": ("CLASS_COLOURS", "write_pictures", "joint_map_traces"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
