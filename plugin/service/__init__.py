"""The long-running side: ``cilp app`` (the App server and an executor, started and stopped
together), ``cilp worker`` (executors of scheduled operations, on any machine), and the folders
the operators' paths must lie in.

    from cilp_plugin.service import run_app
    run_app("cilp-assessment", port=5151)
"""

from .._exports import lazy_exports

_EXPORTS = {
    "app": ("run_app", "run_worker"),
    "executor": ("Settings", "serve_queue", "check_worker_environment"),
    "paths": ("PathNotAllowed", "allowed_roots", "confine", "describe_roots"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
