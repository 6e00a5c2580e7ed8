"""FiftyOne operators: each turns a form (or SDK params) into one library call."""

from .create_splits import CreateSplits
from .load_dataset import LoadRGBLidarDataset

# in fiftyone.yml order
OPERATORS = [LoadRGBLidarDataset, CreateSplits]
