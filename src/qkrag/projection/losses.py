"""The training losses, and `LOSSES`: the one table of them, by name.

Training (`qkrag.projection.train`) computes one batch's scores and hands them to the loss named by
`TrainConfig.loss`; `qkrag train --loss`, `qkrag bench --losses` and `TrainConfig.check` list and check names
against this table. A new loss is a function of a `RankingBatch` and a row of `LOSSES`, both here.

    LOSSES["distill"].fn(batch)        # the loss of one batch
    LOSSES["distill"].needs_teacher    # True: the pairs need teacher scores (projection.teacher.hybrid_teacher)

Every loss is one term next to two that training always adds: a logistic (BCE) term that keeps σ(s·q·k + b) a
probability, and the pull toward the initialisation (`TrainConfig.bce_weight`, `TrainConfig.init_weight`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qkrag.errors import fail
from qkrag.text import or_list

if TYPE_CHECKING:
    import torch


def info_nce_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy where row i's positive is column i; `mask` (True = drop) removes other positives."""
    import torch

    logits = logits.masked_fill(mask, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(logits.shape[0]))


def logistic_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on σ(logit), averaged over the entries with weight 1 (padding gets weight 0)."""
    import torch

    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """KL(teacher || student) over each row's valid candidates: the student's softmax over the candidates is pulled
    toward the teacher's softmax(teacher / temperature). Soft labels instead of binary ones: a mined "negative" the
    teacher scores close to the positive is not pushed away (the GPL paper's finding: soft labels beat hard ones)."""
    import torch

    neg_inf = torch.tensor(float("-inf"))
    target = torch.softmax(torch.where(valid, teacher / temperature, neg_inf), dim=1)
    log_student = torch.log_softmax(torch.where(valid, student, neg_inf), dim=1)
    terms = torch.where(valid, target * (torch.log(target.clamp_min(1e-12)) - log_student), torch.zeros(()))
    return terms.sum(1).mean()


@dataclass
class RankingBatch:
    """What a loss sees of one batch. `logits`: each pair's query against the batch's softmax columns (its own
    positive on the diagonal, then hard and random negatives), already divided by the learned temperature; `mask`:
    True where a column is another known positive of the row's query. With a loss that needs a teacher, `student`
    and `teacher` hold each pair's scores over its teacher's candidates (`valid` marks real ones, not padding)."""

    logits: torch.Tensor
    mask: torch.Tensor
    student: torch.Tensor | None = None
    teacher: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    teacher_temperature: float = 0.5
    distill_weight: float = 1.0


def infonce(batch: RankingBatch) -> torch.Tensor:
    """Rank each pair's positive above the other columns (binary labels)."""
    return info_nce_loss(batch.logits, batch.mask)


def distill(batch: RankingBatch) -> torch.Tensor:
    """Match the teacher's scores over each pair's candidates, listwise, weighted by `distill_weight`."""
    if batch.student is None or batch.teacher is None or batch.valid is None:
        raise fail("the distill loss", "got a batch without teacher scores",
                   "attach a teacher to the pairs (qkrag.projection.teacher.hybrid_teacher)")
    return batch.distill_weight * distillation_loss(batch.student, batch.teacher, batch.valid,
                                                    batch.teacher_temperature)


def both(batch: RankingBatch) -> torch.Tensor:
    """InfoNCE plus the weighted distillation term."""
    return infonce(batch) + distill(batch)


@dataclass(frozen=True)
class Loss:
    """One row of `LOSSES`: the function of a batch, whether it needs teacher scores on the pairs, and `help`: what
    `qkrag train --loss` says in brackets after the name (empty where the name says it all)."""

    fn: Callable[[RankingBatch], torch.Tensor]
    needs_teacher: bool = False
    help: str = ""


LOSSES: dict[str, Loss] = {
    "infonce": Loss(infonce, help="binary labels"),
    "distill": Loss(distill, needs_teacher=True, help="match a BM25 + cosine hybrid teacher's scores over each "
                    "query's top 30, listwise"),
    "both": Loss(both, needs_teacher=True),
}


def check_loss(name: str, where: str = "TrainConfig.loss") -> Loss:
    """The row of `LOSSES` named `name`; an unknown name fails naming the choices."""
    if name not in LOSSES:
        raise fail(where, f"{name!r} is not a loss", f"use one of {', '.join(LOSSES)}")
    return LOSSES[name]


def loss_choices() -> str:
    """The losses in words, for help texts: "infonce (binary labels), distill (...) or both"."""
    return or_list(f"{name} ({row.help})" if row.help else name for name, row in LOSSES.items())
