"""What every training recipe shares: the held-out split, the schedule, the best state, resumable settings.

The recipes (:mod:`.pretraining`, :mod:`.projector_fitting`, :mod:`.regressor_fitting`, :mod:`.finetuning`) keep
only what is their own (the step, the data, the report); these are the parts written once:

- :func:`holdout_split`: a seeded ``(train, val)`` split of ``range(n)``;
- :func:`warmup_cosine`: a linear warm-up, then a cosine to a floor, as a factor of the base learning rate (every
  recipe's schedule: per step, or per epoch for ``pretrain``'s ``cosine-epoch`` and ``fit_projector``'s ``cosine``);
- :class:`BestState`: the best validation score, its step and a copy of the weights, with patience;
- :func:`check_resumable`: a checkpoint's recorded settings against this run's, refusing a resume that
  changed any of them and naming what changed (the checkpoints' layout around them:
  :func:`~.checkpoint.training_state`, read back by :func:`~.checkpoint.resume_checkpoint`);
- :func:`progress_bar`: a tqdm bar when asked for (tqdm imported only then), else ``None``;
- :class:`FitResult`: what a recipe that selects on validation returns beside its model (the score beside a
  no-learning baseline, the history, the warnings of :func:`diagnose`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["BestState", "FitResult", "check_resumable", "diagnose", "holdout_split", "progress_bar", "warmup_cosine"]


def holdout_split(
    n: int, fraction: float, seed: int, *, min_count: int = 0, max_count: int | None = None, min_n: int = 0
) -> tuple[list[int], list[int]]:
    """A seeded ``(train, val)`` split of ``range(n)``: ``round(fraction · n)`` held out, both lists sorted.

    Args:
        min_count, max_count: bounds on the held-out count (when anything is held out at all).
        min_n: below this many items nothing is held out.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction}")
    count = 0 if n < min_n or fraction == 0 else max(min_count, round(fraction * n))
    if max_count is not None:
        count = min(count, max_count)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[count:]), sorted(order[:count])


def warmup_cosine(step: int, total: int, warmup: int = 0, floor: float = 0.0) -> float:
    """The learning-rate factor at ``step`` (0-based): ``(step + 1) / warmup`` during the warm-up, then a cosine
    from 1 to ``floor`` over the remaining ``total - warmup`` steps (``floor`` after them)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class BestState:
    """The best (lowest) validation score seen, the step it came at and a copy of the module's weights.

    Args:
        module: whose ``state_dict`` is copied at each improvement (and at the start, as step 0).
        patience: :attr:`stale` becomes true after this many evaluations without improvement (``None``: never).
        min_improvement: a score counts as better only below ``best · (1 - min_improvement)`` (0: any lower score).
    """

    def __init__(self, module: torch.nn.Module, patience: int | None = None, min_improvement: float = 0.0) -> None:
        self.score, self.step, self.state = math.inf, 0, copy.deepcopy(module.state_dict())
        self.patience, self.since, self.min_improvement = patience, 0, float(min_improvement)

    def update(self, score: float, step: int, module: torch.nn.Module) -> bool:
        """Record an evaluation; returns whether it improved on the best."""
        if score < self.score * (1 - self.min_improvement):
            self.score, self.step, self.state, self.since = (
                float(score),
                int(step),
                copy.deepcopy(module.state_dict()),
                0,
            )
            return True
        self.since += 1
        return False

    @property
    def stale(self) -> bool:
        return self.patience is not None and self.since >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "step": self.step, "state": self.state, "since": self.since}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        self.score, self.step, self.state = float(saved["score"]), int(saved["step"]), saved["state"]
        self.since = int(saved.get("since", 0))


def check_resumable(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    path: object = "the checkpoint",
    *,
    reason: str = "it was trained with other settings or data",
    remedy: str = "pass the same options, or use another output folder to start afresh",
) -> None:
    """Refuse to resume when any setting recorded in a checkpoint differs from this run's.

    Args:
        saved: the settings the checkpoint recorded; current: this run's, under the same keys.
        path: the checkpoint, for the message; ``reason``, ``remedy``: the message's words around the changes
            (each recipe says what its user can do).

    Raises:
        ValueError: ``cannot resume {path}: {reason} (name: old -> new; ...); {remedy}``, naming every changed
            setting in the order of their names.
    """
    changed = [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]
    if changed:
        raise ValueError(f"cannot resume {path}: {reason} ({'; '.join(changed)}); {remedy}")


def progress_bar(enabled: bool, total: int, desc: str, unit: str, initial: int = 0, **options: Any) -> Any | None:
    """A ``tqdm.auto`` bar over ``total`` units from ``initial`` when ``enabled`` (tqdm, of the ``train`` extra, is
    imported only then), else ``None``; ``options`` go to tqdm (``mininterval``, ``dynamic_ncols``, ...)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, **options)


@dataclass(kw_only=True)
class FitResult:
    """What a recipe that selects its weights on validation data returns beside the model (keyword-only fields,
    so that a subclass puts its own, the model first, positionally).

    Attributes:
        score: the selected state's error on the validation data (the training data when there was none).
        baseline: a prediction that learned nothing (the training set's mean shape or pose), scored the same way.
        best_step: the optimiser step of the selected state; ``steps``: steps run (early stopping may end sooner).
        history: one dict per evaluation: ``step``, ``lr``, ``train_loss``, ``val_error`` (and the recipe's own).
        warnings: plain-words problems (:func:`diagnose`); ``config``: every option used, for reports.
    """

    score: float
    baseline: float
    best_step: int
    steps: int
    history: list[dict[str, float]]
    warnings: list[str]
    config: dict[str, Any]

    @property
    def improvement(self) -> float:
        """``1 - score / baseline``: the fraction of the baseline's error the model removes."""
        return 1.0 - self.score / self.baseline if self.baseline > 0 else float("nan")


def diagnose(
    metric: str, score: float, baseline: float, history: list[dict], steps: int, ran: int, has_val: bool
) -> list[str]:
    """Plain-words problems of a fit: no validation data, not clearly better (by 10 %) than the mean shape's
    ``baseline``, or (``ran == steps``, at least 4 evaluations in ``history``) still improving at the end."""
    problems = []
    unit = "%" if metric == "iod" else (" px" if metric == "pixel" else "")
    where = "validation" if has_val else "training (no validation data)"
    if not has_val:
        problems.append(
            "no validation images (fewer than 10 labelled): the regressor could not be selected or "
            "checked on held-out data; its error below is on the training images"
        )
    if not score < 0.9 * baseline:
        problems.append(
            f"the regressor is not clearly better than predicting the training set's mean shape "
            f"({metric} {score:.3g}{unit} vs {baseline:.3g}{unit} on the {where} images): it has "
            "learned little beyond the average layout; try more steps, more labels or another backbone"
        )
    if ran == steps and len(history) >= 4:
        late = [h["val_error"] for h in history[-max(2, len(history) // 4) :]]
        earlier = history[-max(2, len(history) // 4) - 1]["val_error"]
        if late[-1] < earlier * 0.95 and late[-1] <= min(late) * 1.001:
            problems.append(
                f"the {where} error was still falling at the last of {steps} steps "
                f"({earlier:.4g} -> {late[-1]:.4g}{unit} over the last quarter): the regressor is "
                f"probably undertrained; pass more steps (e.g. steps={2 * steps})"
            )
    return problems
