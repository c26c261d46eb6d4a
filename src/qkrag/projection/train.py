"""Training a projection: batching, hard-negative mining, early stopping, model selection, calibration.

The recipe, and why (a naive logistic loss against random negatives made ranking worse than raw cosine on SciFact;
the figures are in benchmarks/results/projection_bench.md):

- a ranking loss, named by `TrainConfig.loss` from `qkrag.projection.losses.LOSSES`: by default a softmax (InfoNCE)
  loss that ranks the positive above in-batch positives of other queries, mined hard negatives (raw
  top-N minus known positives: what the raw model confuses) and random negatives; ranking is what we are judged on;
- a logistic (BCE) term on σ(s·q·k + b) with its own scale and bias keeps the score a probability;
- a squared pull toward the initialisation (‖Q−Q₀‖² + ‖K−K₀‖²): with ~1,000 pairs and 2·d² parameters the map
  overfits fast, and the raw space is a strong prior;
- no document twice as a positive in one batch (a duplicate would be a false in-batch negative), and candidates that
  are known positives of a query are masked out of its softmax;
- early stopping on validation nDCG@10 (every query ranked against all documents, as at serving time), and model
  selection that always includes the initialisation: on validation the result is never worse than where it started,
  and a trained map must beat it by more than luck (a one-sided paired sign-flip test, p <= selection_alpha);
- Platt scaling of (s, b) on validation hits afterwards (`qkrag.projection.calibrate`): fitted on queries training
  never saw, and reported as calibrated only on enough of them, with its held-out ECE;
- numerical guards: a non-finite loss stops training with a clear error, and a kept start keeps the start's (s, b).

Deterministic under `TrainConfig.seed`: numpy and torch generators are seeded, and batch order derives from them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from qkrag.cache import quiet
from qkrag.errors import fail
from qkrag.evaluate.metrics import binary_ndcg
from qkrag.evaluate.stats import sign_flip_p_value
from qkrag.projection.calibrate import calibration_hits, fit_calibration, uncalibrated
from qkrag.projection.light import check_scale_bias
from qkrag.projection.losses import RankingBatch, check_loss, logistic_loss
from qkrag.ranking import exact_search

if TYPE_CHECKING:
    from qkrag.projection.data import Pairs


#: Adam moves each parameter by about the learning rate per step; the maps' entries are of order 1, so a larger rate
#: can only diverge (and above ~1e37 torch overflows float32 inside the step itself).
MAX_LEARNING_RATE = 1.0


@dataclass
class TrainConfig:
    """How to train a projection. Defaults: the best of benchmarks/projection_bench.py's grid on a SciFact validation
    split (its results say which and by how much), with 10 epochs plus early stopping. Tune on validation, never on
    test."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 3e-4
    init_weight: float = 1e-2  # λ of the squared pull λ(‖Q−Q₀‖² + ‖K−K₀‖²) toward the initialisation
    hard_negatives: int = 2  # per pair per step, sampled from the mined pool
    hard_negative_pool: int = 30  # mine from the raw top-N minus known positives
    random_negatives: int = 256  # shared by the batch
    full_softmax: bool = False  # every document a negative in every batch instead of `random_negatives` sampled ones:
    # the most signal per step, at the cost of all document keys per step (keep it off beyond tens of thousands)
    query_negatives: bool = False  # the batch's query texts, read as documents, are negatives too (a row's own query
    # among them): a restatement of a question is not its answer, the mistake cosine makes on a mixed corpus
    bce_weight: float = 0.1  # weight of the logistic term next to the softmax
    temperature: float = 0.05  # initial softmax temperature (learned)
    validation_fraction: float = 0.1  # of queries, when no validation set is given
    holdout: str = "auto"  # how that split is drawn: "query", "document" (validation documents never positives), or
    # "auto": document for judged queries (a random query split would reward a prior over documents), else query
    residual_rank: int | None = None  # train Q = Q₀ + A·Bᵀ (and K likewise) with A, B of this many columns instead
    # of every entry: a low-rank change from the start, which few pairs can pin down; None trains Q and K whole
    loss: str = "infonce"  # a name in projection.losses.LOSSES: "infonce" (binary labels), "distill" (match the
    # pairs' teacher), "both"
    distill_weight: float = 1.0  # weight of the distillation term (losses "distill" and "both")
    teacher_temperature: float = 0.5  # softmax temperature over the teacher's (per-query z-scored) candidate scores
    patience: int = 3  # epochs without validation gain before stopping
    select: bool = True  # early stopping and selection against the start; False keeps the last epoch (the epoch
    # count was chosen elsewhere, e.g. by cross-validation)
    selection_alpha: float = 0.05  # keep a trained map only if it beats the start on validation at this p (1: any gain)
    calibrate: bool = True  # Platt-fit s, b on validation pairs after training
    calibration_depth: int = 10  # calibrate on each validation query's top-N by the projection plus its positives
    eval_k: int = 10  # nDCG@k on validation
    seed: int = 0
    progress: bool = True
    threads: int | None = 1  # torch threads while training; None = torch's default. The matrices are small, so one
    # thread wins, and on a busy machine extra threads spin and wait (benchmarks/results/projection_bench.md)

    def check(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                    "temperature": self.temperature, "eval_k": self.eval_k, "calibration_depth": self.calibration_depth}
        for name, value in positive.items():
            if not value > 0:
                raise fail(f"TrainConfig.{name}", f"{value!r} must be positive", f"set {name} > 0")
        if not self.learning_rate <= MAX_LEARNING_RATE:  # NaN fails here too
            raise fail("TrainConfig.learning_rate", f"{self.learning_rate!r} is above {MAX_LEARNING_RATE:g}: each Adam "
                       "step would move every weight by about that much, far past any useful map",
                       "use a learning rate of at most 1, e.g. the default 3e-4")
        if self.residual_rank is not None and self.residual_rank < 1:
            raise fail("TrainConfig.residual_rank", f"{self.residual_rank!r} is below 1",
                       "use a positive rank, e.g. 8, or None to train Q and K whole")
        non_negative = {"init_weight": self.init_weight, "hard_negatives": self.hard_negatives,
                        "hard_negative_pool": self.hard_negative_pool, "random_negatives": self.random_negatives,
                        "bce_weight": self.bce_weight, "patience": self.patience, "threads": self.threads or 0}
        for name, value in non_negative.items():
            if value < 0:
                raise fail(f"TrainConfig.{name}", f"{value!r} is negative", f"set {name} >= 0")
        check_loss(self.loss)
        if self.holdout not in ("auto", "query", "document"):
            raise fail("TrainConfig.holdout", f"{self.holdout!r} is not a holdout", 'use "auto", "query" or "document"')
        if self.teacher_temperature <= 0:
            raise fail("TrainConfig.teacher_temperature", f"{self.teacher_temperature!r}", "set it > 0")
        if not 0 < self.selection_alpha <= 1:
            raise fail("TrainConfig.selection_alpha", f"{self.selection_alpha!r} is not in (0, 1]",
                       "use e.g. 0.05, or 1 to keep any trained map that gains on validation")
        if self.batch_size < 2 and self.random_negatives == 0 and self.hard_negatives == 0:
            raise fail("TrainConfig", "batch_size 1 with no hard or random negatives leaves nothing to contrast",
                       "raise batch_size or random_negatives")


# ------------------------------------------------------------------------------------------------------------ pieces


def initial_maps(documents: np.ndarray, rank: int) -> np.ndarray:
    """The starting map, r × d: the identity when r = d (training starts at the raw dot product), else the top-r
    principal directions of the documents (the best rank-r approximation of the raw dot product on this corpus)."""
    d = documents.shape[1]
    if rank == d:
        return np.eye(d, dtype=np.float32)
    centred = documents - documents.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    vt = vt[:rank]
    vt *= np.sign(vt[np.arange(rank), np.abs(vt).argmax(1)])[:, None]  # fix SVD's sign ambiguity: deterministic
    return vt.astype(np.float32)


def canonical_rows(documents: np.ndarray) -> np.ndarray:
    """Per document row, the first row with the identical vector: duplicate texts count as one document."""
    _, first, inverse = np.unique(documents, axis=0, return_index=True, return_inverse=True)
    return first[inverse.ravel()].astype(np.int64)


def mine_hard_negatives(pairs: Pairs, canon: np.ndarray, pool: int) -> np.ndarray:
    """Per pair, the raw top-`pool` documents for its query minus the query's known positives (-1 pads).
    Explicit `pairs.negatives` win where a pair has them."""
    vectors, relevant = pairs.unique_queries()
    # Search deep enough that dropping the positives (and any duplicates of them) still leaves `pool` candidates.
    extra = max(len(r) for r in relevant) + len(canon) - len(np.unique(canon))
    _, top = exact_search(vectors, pairs.documents, pool + extra, space="ip")
    mined = np.full((len(relevant), pool), -1, dtype=np.int64)
    for g, (row, rel) in enumerate(zip(top, relevant)):
        rel_canon = {int(canon[r]) for r in rel}
        keep = [int(p) for p in row if int(canon[p]) not in rel_canon][:pool]
        mined[g, : len(keep)] = keep
    out = mined[pairs.groups]
    if pairs.negatives is not None:
        given = (pairs.negatives >= 0).any(1)
        width = max(pool, pairs.negatives.shape[1])
        out = np.pad(out, ((0, 0), (0, width - pool)), constant_values=-1)
        out[given] = np.pad(pairs.negatives, ((0, 0), (0, width - pairs.negatives.shape[1])), constant_values=-1)[given]
    return out


def make_batches(positive_canon: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle pairs into batches in which no document is the positive twice (it would be a false negative for
    the other pair). Greedy: each pair goes to the first open batch that lacks its positive."""
    batches: list[list[int]] = []
    seen: list[set[int]] = []
    first_open = 0
    for i in rng.permutation(len(positive_canon)):
        doc = int(positive_canon[i])
        j = first_open
        while j < len(batches) and (len(batches[j]) >= batch_size or doc in seen[j]):
            j += 1
        if j == len(batches):
            batches.append([])
            seen.append(set())
        batches[j].append(int(i))
        seen[j].add(doc)
        while first_open < len(batches) and len(batches[first_open]) >= batch_size:
            first_open += 1
    return [np.asarray(b, dtype=np.int64) for b in batches]


def _ranking_ndcg(Q: np.ndarray, K: np.ndarray | None, queries: np.ndarray, documents: np.ndarray,
                  relevant: list[set[int]], k: int) -> np.ndarray:
    keys = documents if K is None else documents @ K.T
    _, top = exact_search(queries @ Q.T, keys, k, space="ip")
    return binary_ndcg(top, relevant, k)


# ----------------------------------------------------------------------------------------------------------- fitting


def _teacher_scores(q, keys_of, D_t, pairs: Pairs, batch: np.ndarray, inv_temp):
    """Per pair of the batch, over its teacher's candidates: the student's logits q·k, the teacher's scores, and
    which candidates are real (not padding)."""
    import torch

    rows = pairs.teacher_rows[batch]
    valid = torch.from_numpy(rows >= 0)
    keys = keys_of(D_t[torch.from_numpy(np.where(rows >= 0, rows, 0)).reshape(-1)]).reshape(*rows.shape, -1)
    student = torch.einsum("br,bcr->bc", q, keys) * inv_temp
    return student, torch.from_numpy(pairs.teacher_scores[batch]), valid


@dataclass(frozen=True)
class MapShape:
    """What an estimator asks training for: the rank r (None = d) and how K relates to Q."""

    rank: int | None = None
    tied: bool = False  # K is Q (symmetric)
    query_only: bool = False  # K = I (query adapter): documents stay as stored
    name: str = "qk"  # for the progress bar


@dataclass
class Fitted:
    """What training learned. The estimator's `fit` copies it onto its own `*_` attributes."""

    Q: np.ndarray
    K: np.ndarray | None
    scale: float
    bias: float
    history: list[dict[str, Any]]
    selected: str
    validation: dict[str, Any]
    encoder: str
    training_hash: str
    training_positive_ids: list[str] | None
    calibration: dict[str, Any]


def fit_maps(pairs: Pairs, validation: Pairs | None, config: TrainConfig, shape: MapShape = MapShape()) -> Fitted:
    """Train Q (and K) on `pairs`, select on `validation` (or a seeded split of `pairs`), calibrate (s, b)."""
    import torch

    config.check()
    data_hash = pairs.content_hash()  # of the data as given, before the validation split
    # every document that was a positive anywhere in fitting (validation too: selection saw it)
    seen = set(pairs.positive_ids()) | set(validation.positive_ids() if validation is not None else ())
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        pairs, validation = _checked_split(pairs, validation, config)
        trainer = _Trainer(pairs, config, shape)
        init, best, history = trainer.run(validation)
    finally:
        torch.set_num_threads(threads)
    if config.select:
        best, selected, p_gain = _select(init, best, config, "identity" if trainer.r == trainer.d else f"pca-{trainer.r}")
    else:
        selected, p_gain = f"trained (epoch {best['epoch']}, the last: no selection)", None
    Q, K = best["state"]
    # the start's (s, b) go with the start's maps: a kept start never carries (s, b) from a run it did not keep
    start = trainer.initial_scale_and_bias() if best["epoch"] == 0 else trainer.scale_and_bias()
    s, b, calibration = _calibrate(Q, K, validation, start, config)
    check_scale_bias(s, b, f"training {shape.name} on {pairs.source}")
    summary = _too_few(len(best["scores"]), config)
    summary.update({f"ndcg@{config.eval_k}": round(best["ndcg"], 5), f"init_ndcg@{config.eval_k}": history[0]["val_ndcg"],
                    "n_queries": len(best["scores"]), "n_pairs": len(validation), "best_epoch": best["epoch"],
                    "figures": "held-out validation queries"})
    if p_gain is not None:  # only where selection tested the gain: a p-value beside an untested choice misleads
        summary["gain_p_value"] = round(p_gain, 5)
    summary.update({"calibrated": calibration["calibrated"], "train_seconds": history[-1]["seconds"]})
    return Fitted(Q, K, s, b, history, selected, summary, pairs.encoder, data_hash,
                  sorted(seen) if pairs.doc_ids is not None else None, calibration)


#: Below this many validation queries, one split cannot tell a real gain from luck (the sign-flip test rarely reaches
#: p <= 0.05), so the start is kept almost always: the run says so and points to cross-validation.
MIN_VALIDATION_QUERIES = 30


def _too_few(n_queries: int, config: TrainConfig) -> dict[str, str]:
    if n_queries >= MIN_VALIDATION_QUERIES:
        return {}
    message = (f"only {n_queries} validation queries: too few to tell a gain from luck, so the start is kept unless "
               f"the gain is near certain; use cross-validation (qkrag train --cv 5, or train_with_cv) or a larger "
               f"validation set (--validation)")
    return {"warning": message}


def holdout_for(pairs: Pairs, holdout: str) -> str:
    """The validation split `holdout` means for these pairs: "auto" holds judged queries out by document."""
    if holdout != "auto":
        return holdout
    return "document" if pairs.origin == "judged queries" else "query"


def _checked_split(pairs: Pairs, validation: Pairs | None, config: TrainConfig) -> tuple[Pairs, Pairs]:
    if validation is None:
        pairs, validation = pairs.split(config.validation_fraction, config.seed, by=holdout_for(pairs, config.holdout))
    if check_loss(config.loss).needs_teacher and pairs.teacher_rows is None:
        raise fail(pairs.source, f"has no teacher scores, which loss={config.loss!r} needs",
                   "attach a teacher (qkrag.projection.teacher.hybrid_teacher) or use loss='infonce'")
    if validation.documents.shape != pairs.documents.shape or not np.array_equal(validation.documents,
                                                                                 pairs.documents):
        raise fail(validation.source, "validation pairs point into another document matrix than the training pairs",
                   "build both from the same corpus and document vectors")
    if pairs.encoder and validation.encoder and pairs.encoder != validation.encoder:
        raise fail(validation.source, f"was embedded with {validation.encoder}, training pairs with {pairs.encoder}",
                   "embed both with the same encoder")
    return pairs, validation


class _MapParameters:
    """The trainable part of one map: the whole matrix, or, with a residual rank, Q₀ + A·Bᵀ where A starts at zero
    (so training starts exactly at Q₀) and B at small random values (so A gets a gradient from the first step)."""

    def __init__(self, init: np.ndarray, residual_rank: int | None, seed: int):
        import torch

        self.init = torch.from_numpy(init.copy())
        if residual_rank is None:
            self.whole = torch.nn.Parameter(torch.from_numpy(init.copy()))
            self.parameters: tuple = (self.whole,)
            return
        self.whole = None
        k = min(residual_rank, *init.shape)
        generator = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(torch.zeros(init.shape[0], k))
        self.B = torch.nn.Parameter(torch.randn(init.shape[1], k, generator=generator) / math.sqrt(init.shape[1]))
        self.parameters = (self.A, self.B)

    def matrix(self):
        return self.whole if self.whole is not None else self.init + self.A @ self.B.T

    def distance(self):
        """‖map − Q₀‖², the pull toward the start."""
        return ((self.matrix() - self.init) ** 2).sum()


class _Trainer:
    """One training run's state: the parameters, the optimiser, the mined negatives and the positive masks."""

    def __init__(self, pairs: Pairs, config: TrainConfig, shape: MapShape):
        import torch

        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.pairs, self.config, self.shape = pairs, config, shape
        self.n_docs, self.d = pairs.documents.shape
        self.r = shape.rank or self.d
        self.canon = canonical_rows(pairs.documents)
        # Parameters: Q (and K unless tied or fixed), a softmax temperature, and the probability's scale and bias.
        init = initial_maps(pairs.documents, self.r)
        separate = not (shape.tied or shape.query_only)
        self.q_part = _MapParameters(init, config.residual_rank, config.seed)
        self.k_part = _MapParameters(init, config.residual_rank, config.seed + 1) if separate else None
        self.log_inv_temp = torch.nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        self.scale = torch.nn.Parameter(torch.tensor(1.0 / config.temperature))
        self.bias = torch.nn.Parameter(torch.tensor(-0.5 / config.temperature))  # σ = 0.5 at q·k = 0.5
        params = [*self.q_part.parameters, *(self.k_part.parameters if self.k_part else ()), self.log_inv_temp,
                  self.scale, self.bias]
        self.optimizer = torch.optim.Adam(params, lr=config.learning_rate)
        self.D = torch.from_numpy(pairs.documents)
        self.Vq = torch.from_numpy(pairs.queries)
        self.pos_canon = self.canon[pairs.positives]
        # A (query group, canonical document) key per known positive, sorted: masks other positives of a query.
        self.n_keys = self.n_docs + 1
        self.positive_keys = np.unique(pairs.groups * self.n_keys + self.pos_canon)
        self.pool = (mine_hard_negatives(pairs, self.canon, config.hard_negative_pool)
                     if config.hard_negatives and config.hard_negative_pool else None)
        self.h = config.hard_negatives if self.pool is not None else 0

    def keys_of(self, x):
        return x if self.shape.query_only else x @ (self.q_part if self.k_part is None else self.k_part).matrix().T

    def maps(self) -> tuple[np.ndarray, np.ndarray | None]:
        Q = self.q_part.matrix().detach().numpy().copy()
        if self.shape.query_only:
            return Q, None
        return Q, Q if self.k_part is None else self.k_part.matrix().detach().numpy().copy()

    def scale_and_bias(self) -> tuple[float, float]:
        return float(self.scale.detach()), float(self.bias.detach())

    def initial_scale_and_bias(self) -> tuple[float, float]:
        """The (s, b) training starts from: σ = 0.5 at q·k = 0.5, with the initial temperature's slope."""
        return 1.0 / self.config.temperature, -0.5 / self.config.temperature

    def candidates(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The batch's softmax columns (its positives, h hard negatives per pair, shared random documents) and the
        mask of columns that are known positives of a row's query (True = drop; a row's own positive stays)."""
        B = len(batch)
        if self.h:  # sample h of each pair's mined pool; where the pool runs dry, a random document
            cand = self.pool[batch]
            pick = np.argsort(self.rng.random(cand.shape) + ~(cand >= 0), axis=1)[:, :self.h]
            hard = np.take_along_axis(cand, pick, 1)
            hard = np.where(hard >= 0, hard, self.rng.integers(0, self.n_docs, hard.shape))
        else:
            hard = np.zeros((B, 0), dtype=np.int64)
        rand = (np.arange(self.n_docs) if self.config.full_softmax
                else self.rng.integers(0, self.n_docs, self.config.random_negatives))
        columns = np.concatenate([self.pairs.positives[batch], hard.ravel(), rand])
        keys = self.pairs.groups[batch][:, None] * self.n_keys + self.canon[columns][None, :]
        idx = np.searchsorted(self.positive_keys, keys).clip(max=len(self.positive_keys) - 1)
        mask = self.positive_keys[idx] == keys
        mask[np.arange(B), np.arange(B)] = False
        return columns, mask

    def batch_loss(self, batch: np.ndarray):
        import torch

        config, B, h = self.config, len(batch), self.h
        columns, mask = self.candidates(batch)
        q = self.Vq[batch] @ self.q_part.matrix().T
        dots = q @ self.keys_of(self.D[columns]).T
        if config.query_negatives:  # appended after every document column, so the logistic term's columns stay put
            dots = torch.cat([dots, q @ self.keys_of(self.Vq[batch]).T], 1)
            mask = np.concatenate([mask, np.zeros((B, B), dtype=bool)], 1)
        mask_t = torch.from_numpy(mask)
        chosen = check_loss(config.loss)
        scores = RankingBatch(dots * self.log_inv_temp.exp(), mask_t, teacher_temperature=config.teacher_temperature,
                              distill_weight=config.distill_weight)
        if chosen.needs_teacher:
            scores.student, scores.teacher, scores.valid = _teacher_scores(
                q, self.keys_of, self.D, self.pairs, batch, self.log_inv_temp.exp())
        loss = chosen.fn(scores)
        if config.bce_weight:
            # Own positive (label 1); own hard negatives and the first few random ones (label 0).
            n_rand = max(h, 1)
            cols = torch.from_numpy(np.concatenate([np.arange(B)[:, None], B + np.arange(B * h).reshape(B, h),
                                                    np.broadcast_to(B + B * h + np.arange(n_rand), (B, n_rand))], 1))
            logits = self.scale * torch.gather(dots, 1, cols) + self.bias
            labels = torch.zeros_like(logits)
            labels[:, 0] = 1.0
            weight = (~torch.gather(mask_t, 1, cols)).float()
            weight[:, 0] = 1.0
            loss = loss + config.bce_weight * logistic_loss(logits, labels, weight)
        if config.init_weight:
            reg = self.q_part.distance() + (self.k_part.distance() if self.k_part is not None else 0.0)
            loss = loss + config.init_weight * reg
        return loss

    def epoch(self, bar) -> float:
        losses = []
        for batch in make_batches(self.pos_canon, self.config.batch_size, self.rng):
            loss = self.batch_loss(batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise fail(f"training {self.shape.name} on {self.pairs.source}", f"the loss became {value} "
                           f"(learning rate {self.config.learning_rate:g})",
                           "training diverged: lower the learning rate (--lr), e.g. to the default 3e-4")
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(value)
            bar.update(1)
        return float(np.mean(losses))

    def run(self, validation: Pairs) -> tuple[dict, dict, list[dict[str, Any]]]:
        """Train with early stopping on validation nDCG; returns (start, best epoch, history). Epoch 0 is the start."""
        from tqdm.auto import tqdm

        config, started = self.config, time.perf_counter()
        val_queries, val_relevant = validation.unique_queries()

        def scored(epoch: int) -> dict:
            Q, K = self.maps()
            scores = _ranking_ndcg(Q, K, val_queries, self.pairs.documents, val_relevant, config.eval_k)
            return {"epoch": epoch, "ndcg": float(scores.mean()), "state": (Q, K), "scores": scores}

        init = best = scored(0)
        history = [{"epoch": 0, "loss": None, "val_ndcg": round(best["ndcg"], 5), "seconds": 0.0}]
        stale, steps = 0, config.epochs * math.ceil(len(self.pairs) / config.batch_size)
        with tqdm(total=steps, desc=f"train {self.shape.name}", unit="step", disable=quiet() or not config.progress,
                  dynamic_ncols=True) as bar:
            for epoch in range(1, config.epochs + 1):
                loss, now = self.epoch(bar), scored(epoch)
                history.append({"epoch": epoch, "loss": round(loss, 5), "val_ndcg": round(now["ndcg"], 5),
                                "seconds": round(time.perf_counter() - started, 2)})
                bar.set_postfix(loss=f"{loss:.4f}", val_ndcg=f"{now['ndcg']:.4f}")
                best, stale = (now, 0) if now["ndcg"] > best["ndcg"] or not config.select else (best, stale + 1)
                if stale > config.patience:
                    break
        history[-1]["seconds"] = round(time.perf_counter() - started, 2)
        return init, best, history


def _select(init: dict, best: dict, config: TrainConfig, init_name: str) -> tuple[dict, str, float]:
    """Model selection: the initialisation is candidate epoch 0, so ties and losses go back to the raw space. And a
    gain on a few validation queries may be luck, which real queries then pay for (on synthetic pairs, a trained map
    that won on validation lost on test): keep it only if a one-sided paired sign-flip test over the validation
    queries says it beats the initialisation (p <= selection_alpha). Returns (kept, why in words, p)."""
    if best["epoch"] == 0:
        return init, f"{init_name} (no epoch beat the start on validation)", 1.0
    p_gain = sign_flip_p_value(best["scores"] - init["scores"], seed=config.seed, alternative="greater")
    if p_gain > config.selection_alpha:
        return init, (f"{init_name} (trained epoch {best['epoch']} gained {best['ndcg'] - init['ndcg']:+.3f} on "
                      f"{len(init['scores'])} validation queries, p = {p_gain:.2f} > {config.selection_alpha})"), p_gain
    return best, f"trained (epoch {best['epoch']}, p = {p_gain:.3f})", p_gain


def _calibrate(Q: np.ndarray, K: np.ndarray | None, validation: Pairs, start: tuple[float, float],
               config: TrainConfig) -> tuple[float, float, dict[str, Any]]:
    """Platt-fit (s, b) on the validation queries' hits (see `fit_calibration`: calibrated only on enough held-out
    queries). A non-positive fitted scale would invert the ranking, so the trained (s, b) stay then."""
    if not config.calibrate:
        return (*start, uncalibrated("calibration was switched off (TrainConfig.calibrate=False)"))
    dots, labels, groups = calibration_hits(Q, K, validation, config.calibration_depth)
    return fit_calibration(dots, labels, groups, start, against=validation.origin,
                           method="validation split", seed=config.seed)
