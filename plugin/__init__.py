"""The FiftyOne side of cilp-multimodal, and the plugin's entry point.

FiftyOne executes this file (``py_entry`` in ``fiftyone.yml``) under a synthetic
module name each time it builds an operator registry, so it holds no state and
imports nothing heavy: the operators live in the installed ``operators`` package.

The package in layers, each importing only those below it (``tests/test_import_graph.py``
checks it; ``operators/`` sits on top of all of them):

====================  =======================================================================
``cli``               the ``cilp`` command
``service/``          ``cilp app`` and ``cilp worker`` (App server, executors), the operators'
                      allowed folders
``writeback/``        runs back into the dataset: ``apply_run``, classifier and CILP results,
                      embedding maps, staged swaps, pictures
``runs/``             the run registry and shipped checkpoints, training, the CILP pipeline,
                      the runs panel's table
``dataset/``          FiftyOne: ingest, splits, arrays, sources, views, the dataset lease
``data/``             raw files, no FiftyOne: layout, generator, download, derived files, workers
====================  =======================================================================

Each sub-package's ``__init__`` re-exports its public names, imported on first use
(``_exports.py``), so importing one module never imports its siblings.
"""


def register(p):
    from cilp_operators import OPERATORS, PANELS

    for operator in OPERATORS + PANELS:
        p.register(operator)
