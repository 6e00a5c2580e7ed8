"""The input sizes a training benchmark generates its data at: its flags and the variant they name.

    add_size_arguments(parser)           # --image-size H W, --beams N_AZ N_ZE (default 64 64 each)
    size_variant((128, 128), (128, 128))  # '128x128': a CSV of its own; None for the original's sizes
"""

from __future__ import annotations

import argparse

#: the original's images and range images
REFERENCE = (64, 64)


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=int, nargs=2, default=list(REFERENCE), metavar=("H", "W"),
                        help="generated images' rows and columns (default 64 64)")
    parser.add_argument("--beams", type=int, nargs=2, default=list(REFERENCE), metavar=("N_AZ", "N_ZE"),
                        help="generated range images' beams (default 64 64)")


def size_variant(image_size, beams) -> str | None:
    """The images' size as a results-file variant (``128x128``); None for the original's sizes."""
    return None if tuple(image_size) == tuple(beams) == REFERENCE else "x".join(map(str, image_size))
