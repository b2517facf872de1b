"""The paper's evaluation protocols, as functions returning result dicts.

- :mod:`.matching`: landmark matching on TPS-warped pairs (Table 1).
- :mod:`.regression`: linear landmark regression on frozen features (Tables 2-5, Fig. 4), each error
  beside the training set's mean shape.
- :mod:`.report`: the environment recorded with every result, markdown tables, JSON.
"""

from .matching import ProjectedDescriptors, evaluate_matching
from .regression import StageSubset, evaluate_regression, predict_dataset, split_indices
from .report import environment, results_table, save_results

__all__ = [
    "ProjectedDescriptors",
    "StageSubset",
    "environment",
    "evaluate_matching",
    "evaluate_regression",
    "predict_dataset",
    "results_table",
    "save_results",
    "split_indices",
]
