"""Raw files, no FiftyOne: the on-disk layout of the pairs, the synthetic generator, the download,
the import of images and point clouds from elsewhere, the files derived for the App (depth picture,
point cloud, thumbnail), the worker processes.

    from cilp_plugin.data import layout, synth
    report = layout.scan("data/synthetic")        # pair by stem, validate, report quirks
    synth.generate("data/synthetic", n_per_class=100, seed=42)

``download.download(url, dest)`` fetches and unpacks a data set (the module and the function
share the name: the module is what ``cilp_plugin.data.download`` is).
"""

from .._exports import lazy_exports

_EXPORTS = {
    "layout": ("CLASS_FOLDERS", "LABELS", "QUIRK_TAGS", "FormatError", "Pair", "ScanReport", "scan", "read_rgb",
               "read_depth", "read_angles", "write_pair", "depth_to_xyza", "find_data_roots"),
    "synth": ("SceneConfig", "LOOKS", "generate", "add_quirks"),
    "pointclouds": ("Beams", "import_pointclouds"),
    "download": ("DownloadError", "safe_extract", "locate_data_root", "keep_lidar_cnn"),
    "derived": ("DerivedFiles", "derive", "derive_many"),
    "workers": ("process_pool",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
