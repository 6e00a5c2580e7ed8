"""The FiftyOne side of cilp-multimodal, and the plugin's entry point.

FiftyOne executes this file (``py_entry`` in ``fiftyone.yml``) under a synthetic
module name each time it builds an operator registry, so it holds no state and
imports nothing heavy: the operators live in the installed ``operators`` package.
"""


def register(p):
    from cilp_operators import OPERATORS, PANELS

    for operator in OPERATORS + PANELS:
        p.register(operator)
