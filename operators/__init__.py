"""FiftyOne operators: each turns a form (or SDK params) into one library call; and the plugin's panels."""

from .apply_model import ApplyModel
from .create_splits import CreateSplits
from .find_cross_modal_matches import FindCrossModalMatches
from .load_dataset import LoadRGBLidarDataset
from .runs_panel import RunsPanel
from .train_cilp import TrainCILP
from .train_fusion import TrainFusion

# in fiftyone.yml order
OPERATORS = [LoadRGBLidarDataset, CreateSplits, TrainFusion, TrainCILP, ApplyModel, FindCrossModalMatches]
# in fiftyone.yml order, under panels:
PANELS = [RunsPanel]
