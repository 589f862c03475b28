"""The sequential recommender as one LightningModule composed from parts, each chosen in config by `_target_`:

- item representation (items.py): token -> input vector, item -> output vector (an id table tied between both, or
  content-based ones);
- backbone (backbones/): input vectors (+ timestamps) -> hidden states, causal or bidirectional;
- objective (objectives.py): next-item or masked-item targets, and which hidden state is the user's vector;
- loss (losses.py): BCE, sampled softmax (logQ), gBCE, full cross-entropy in chunks or fused;
- optimizer and scheduler (`_partial_` nodes; optim.py).

Everything else is shared by every sequential model and lives here once: the streaming DataModule (timestamps when
the backbone asks), the memory estimate and refusal, seeding (weights, data order, dropout, negatives and masks all
follow from `seed`; a step's randomness depends only on (seed, rank, step), so a resumed run repeats the one that
ran through), checkpoints and resume, DDP, and scoring through retrieval.py (VectorRecommender).
Memory: the parts' parameters and Adam's state (16 bytes per parameter, most of them in the items x d table), one
batch's activations and loss (memory.py prints the estimate), and the scoring sequences, memory-mapped from disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from yambda_dl.data import views
from yambda_dl.data.datamodules import SequenceDataModule
from yambda_dl.data.sequences import PAD, scoring_matrix, user_sequences
from yambda_dl.models.base import NotFittedError, StateVectors, UserEvents
from yambda_dl.models.sequential import memory
from yambda_dl.models.sequential.optim import parameter_groups
from yambda_dl.retrieval import topk
from yambda_dl.utils.memory import GIB, available_bytes, check_fits

if TYPE_CHECKING:
    from yambda_dl.data.csr import CSR
    from yambda_dl.data.split import Split
    from yambda_dl.models.sequential.backbones import Backbone
    from yambda_dl.models.sequential.items import ItemRepresentation

PACKAGE = "yambda_dl.models.sequential"
# The parts, each a config node with a `_target_`, and the defaults a bare build gets (the paper's SASRec)
DEFAULT_PARTS: dict[str, dict[str, Any] | None] = {
    "item_repr": {"_target_": f"{PACKAGE}.items.IdEmbedding"},
    "backbone": {"_target_": f"{PACKAGE}.backbones.transformer.Transformer"},
    "objective": {"_target_": f"{PACKAGE}.objectives.NextItem"},
    "loss": {"_target_": f"{PACKAGE}.losses.BCE"},
    "optimizer": {"_target_": "torch.optim.Adam"},
    "scheduler": None,  # a constant learning rate
}
# the model's top-level knobs that parts receive from it (one place to set them, and flat keys for sweeps)
SHARED = {"item_repr": ("d_model",), "backbone": ("d_model", "max_len"), "optimizer": ("lr",)}


@dataclass(frozen=True)
class TrainingConfig:
    """The model's top-level keys; the defaults are the paper's SASRec: d 64, 200 events, Adam 1e-3, batch 256."""

    d_model: int = 64  # item vectors and hidden states
    max_len: int = 200  # events a user's sequence keeps (the newest ones)
    lr: float = 1e-3
    batch_size: int = 256  # users per step
    epochs: int = 100
    shuffle_buffer: int = 8192  # users mixed before batching, per dataloader worker
    num_workers: int = 0  # dataloader workers per process (0: read in the training process)
    seed: int = 0  # weights, data order, dropout, negatives and masks all follow from it
    compile: bool = False  # torch.compile the backbone (GPU runs; CPU tests stay eager)
    ckpt_path: str | None = None  # resume from this checkpoint (yambda-train resolves "last" to the run's last.ckpt)
    early_stopping_patience: int | None = None  # validations without improvement before stopping (tune mode)
    early_stopping_monitor: str = "val/ndcg@100"  # the sweep objective RankingEvaluation logs
    score_batch_size: int = 1024  # users per forward pass when computing user vectors
    memory_fraction: float = 0.9  # refuse a configuration whose estimate exceeds this share of free memory

    def __post_init__(self) -> None:
        sizes = {k: getattr(self, k) for k in ("d_model", "max_len", "batch_size", "epochs", "score_batch_size")}
        bad = next((k for k, v in sizes.items() if v < 1), None)
        if bad is not None or self.lr <= 0:
            raise ValueError(f"model.{bad or 'lr'} must be > 0, got {sizes.get(bad, self.lr)}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1 or null, got {self.early_stopping_patience}")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")


def build_sequential(**keys: Any) -> SequentialRecommender:
    """A sequential recommender from a model config: top-level keys (TrainingConfig) and part nodes (DEFAULT_PARTS).

    An unknown key is an error naming the valid ones; a part that sets a top-level knob itself is an error naming
    the key to set instead (model.lr, not model.optimizer.lr: one place for each setting).
    """
    parts = {name: keys.pop(name) for name in list(keys) if name in DEFAULT_PARTS}
    valid = {f.name for f in fields(TrainingConfig)}
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise TypeError(
            f"unknown sequential-model key(s) {unknown}; valid choices: {', '.join(sorted(valid | set(DEFAULT_PARTS)))}"
        )
    return SequentialRecommender(TrainingConfig(**keys), **parts)


def _plain(node: Any) -> Any:
    """A config node as plain Python (DictConfig from Hydra with _recursive_=false, or already a dict)."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _instantiate(node: dict[str, Any], part: str, **kwargs: Any) -> Any:
    """Build a part from its node (a `_target_` and its keys) with `kwargs` added; errors name the part."""
    import hydra

    try:
        return hydra.utils.instantiate({**node, **kwargs}, _convert_="all")
    except Exception as error:  # Hydra wraps the target's own error: keep its one line and name the part
        cause = error.__cause__ or error
        raise ValueError(f"model.{part} ({node.get('_target_')}): {cause}") from None


@rank_zero_only
def _announce(message: str) -> None:
    print(message, flush=True)


class SequentialRecommender(lightning.LightningModule):
    """SASRec, BERT4Rec, GRU4Rec, eSASRec, HSTU, ...: one module, the parts from config; scored via retrieval.py."""

    def __init__(self, training: TrainingConfig | None = None, **parts: Any) -> None:
        super().__init__()
        self.training_config = cfg = training or TrainingConfig()
        unknown = sorted(set(parts) - set(DEFAULT_PARTS))
        if unknown:
            raise TypeError(f"unknown part(s) {unknown}; valid choices: {', '.join(DEFAULT_PARTS)}")
        self.parts: dict[str, dict[str, Any] | None] = {}
        for name, default in DEFAULT_PARTS.items():
            node = _plain(parts.get(name, default))
            if node is not None and not (isinstance(node, dict) and node.get("_target_")):
                raise ValueError(f"model.{name} must be a config node with a _target_ (or null), got {node!r}")
            for knob in SHARED.get(name, ()):
                if node is not None and knob in node:
                    raise ValueError(f"set model.{knob}, not model.{name}.{knob}: the model's {knob} is shared")
            self.parts[name] = node
        if self.parts["item_repr"] is None or self.parts["backbone"] is None or self.parts["loss"] is None:
            raise ValueError("model.item_repr, model.backbone and model.loss are required (not null)")
        self.max_epochs = cfg.epochs  # train.py hands it to the Trainer
        # plain values only: checkpoints stay loadable with weights_only, and a checkpoint rebuilds its model
        self.save_hyperparameters({"training": asdict(cfg), "parts": self.parts})
        self.objective = _instantiate(self.parts["objective"] or DEFAULT_PARTS["objective"], "objective")
        self.loss = _instantiate(self.parts["loss"], "loss")
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            self.backbone: Backbone = _instantiate(
                self.parts["backbone"], "backbone", d_model=cfg.d_model, max_len=cfg.max_len
            )
        if self.backbone.causal != self.objective.causal:
            need = "a causal" if self.objective.causal else "a bidirectional"
            raise ValueError(
                f"model.objective {type(self.objective).__name__} needs {need} backbone; "
                f"{type(self.backbone).__name__} has causal={self.backbone.causal}"
            )
        self.items: ItemRepresentation | None = None  # sized by the split's catalogue in fit()
        self._scoring: np.ndarray | None = None  # (num_users, max_len) memory-mapped scoring sequences
        self._scoring_times: np.ndarray | None = None  # their timestamps, for time-aware backbones
        self._datamodule: SequenceDataModule | None = None

    # --- fit -------------------------------------------------------------------------------------------------

    def build_items(self, split: Split) -> None:
        """The item representation sized to the split's train catalogue (seeded; also what loading a checkpoint
        calls before the weights are read)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.training_config.seed + 1)  # not the backbone's stream
            self.items = _instantiate(
                self.parts["item_repr"],
                "item_repr",
                num_items=split.num_items,
                num_special=self.objective.num_special,
                d_model=self.training_config.d_model,
                split=split,
            )

    def prepare_scoring(self, split: Split, source: Path | None = None) -> None:
        """The ranked users' last max_len train events (and their timestamps when the backbone reads them)."""
        max_len = self.training_config.max_len
        timed = self.backbone.uses_timestamps
        source = source or user_sequences(split, max_len, timestamps=timed)
        self._scoring = scoring_matrix(split, max_len, source=source)
        self._scoring_times = scoring_matrix(split, max_len, source=source, column="timestamp") if timed else None

    def fit(self, split: Split, trainer: lightning.Trainer | None = None) -> SequentialRecommender:
        """Train on the split's train sequences; scoring then uses each ranked user's last max_len train events."""
        cfg = self.training_config
        if cfg.early_stopping_patience is not None and split.protocol.mode != "tune":
            raise ValueError(
                "model.early_stopping_patience needs validation metrics: set protocol.mode=tune (or "
                "model.early_stopping_patience=null)"
            )
        self.build_items(split)
        trainer = trainer or self._default_trainer()
        self._check_memory(split.num_items, trainer.strategy.root_device)
        counts = views.item_counts(split) if getattr(self.loss, "needs_counts", True) else np.ones(split.num_items)
        self.loss.setup(counts)
        timed = self.backbone.uses_timestamps
        # built before trainer.fit: under DDP the other ranks start inside it and find the files ready
        self.prepare_scoring(split, source=user_sequences(split, cfg.max_len + 1, timestamps=timed))
        self._datamodule = SequenceDataModule(
            split, cfg.max_len, cfg.batch_size, cfg.shuffle_buffer, cfg.num_workers, cfg.seed, timestamps=timed
        )
        if cfg.compile:
            self.backbone.compile()  # in place: checkpoints keep the eager module's keys
        trainer.fit(self, datamodule=self._datamodule, ckpt_path=cfg.ckpt_path)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path, split: Split, map_location: str = "cpu") -> SequentialRecommender:
        """The model a checkpoint holds, ready to score the split it was trained on (its catalogue and users)."""
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        hparams = checkpoint["hyper_parameters"]
        model = cls(TrainingConfig(**hparams["training"]), **hparams["parts"])
        model.build_items(split)
        model.load_state_dict(checkpoint["state_dict"])
        model.prepare_scoring(split)
        return model

    def _default_trainer(self) -> lightning.Trainer:
        """A quiet single-CPU Trainer for direct use (tests, notebooks); the app passes configs/trainer's."""
        return lightning.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=self.max_epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    def _check_memory(self, num_items: int, device: torch.device) -> None:
        cfg = self.training_config
        needed = memory.estimate(self.items, self.backbone, self.loss, cfg.batch_size, cfg.max_len)
        what = (
            f"{type(self.backbone).__name__} ({num_items:,} items, d={cfg.d_model}, batch {cfg.batch_size} x "
            f"{cfg.max_len}, loss {type(self.loss).__name__}) on {device}"
        )
        available = available_bytes(device)
        _announce(f"{what}: memory estimate {needed.describe()} of {available / GIB:.2f} GiB free")
        check_fits(
            needed.total,
            what,
            device,
            cfg.memory_fraction,
            detail=f" ({needed.describe()})",
            hint=memory.HINT,
            estimate=True,
            available=available,
        )

    # --- Lightning hooks -------------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        node = dict(self.parts["optimizer"])
        weight_decay = node.pop("weight_decay", None)  # decoupled from the groups: see optim.parameter_groups
        make = _instantiate({**node, "_partial_": True}, "optimizer")
        optimizer = make(parameter_groups([self.items, self.backbone], weight_decay), lr=self.training_config.lr)
        if self.parts["scheduler"] is None:
            return optimizer
        schedule = _instantiate({**self.parts["scheduler"], "_partial_": True}, "scheduler")
        scheduler = schedule(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self) -> list[lightning.Callback]:
        """Early stopping, when asked. Checkpoints are the Trainer's (the app's callbacks group writes them into
        <run folder>/checkpoints, where model.ckpt_path=last finds them)."""
        cfg = self.training_config
        if cfg.early_stopping_patience is None:
            return []
        # checked at train epoch end, after RankingEvaluation (a Trainer callback, so it runs first) logs
        return [
            EarlyStopping(
                cfg.early_stopping_monitor,
                patience=cfg.early_stopping_patience,
                mode="max",
                check_on_train_epoch_end=True,
            )
        ]

    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        items = self.items
        # A step's randomness (masks, dropout, negatives) depends only on (seed, rank, step): a run resumed from a
        # checkpoint repeats the one that ran through, whatever happened to the global RNG in between.
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(self._step_seed())
            mask = items.mask if self.objective.num_special > 1 else None
            tokens, targets, columns = self.objective.training_batch(batch["items"], items.pad, mask)
            times = batch["timestamps"][:, columns] if "timestamps" in batch else None
            hidden = self.backbone(items(tokens), tokens != items.pad, times)
            has_target = targets >= 0
            rows = torch.arange(len(tokens), device=tokens.device)[:, None].expand_as(targets)[has_target]
            loss = self.loss(hidden[has_target], targets[has_target], items, rows)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=max(int(has_target.sum()), 1))
        return loss

    def _step_seed(self) -> int:
        seed = [self.training_config.seed, self.global_rank, self.global_step]
        return int(np.random.SeedSequence(seed).generate_state(1)[0])

    # --- scoring (VectorRecommender) ---------------------------------------------------------------------------

    def item_vectors(self) -> Tensor:
        """(num_items, d) float32: the candidates' output vectors."""
        if self.items is None:
            raise NotFittedError(f"{type(self).__name__}.item_vectors() called before fit()")
        with torch.no_grad():
            return self.items.output_vectors().detach().float()

    def user_vectors(self, user_idx: Tensor) -> Tensor:
        """(n, d) float32: the objective's user state over each user's last train events, in eval mode.

        Memory: score_batch_size users' activations (and scoring rows) at a time.
        """
        if self.items is None or self._scoring is None:
            raise NotFittedError(f"{type(self).__name__}.user_vectors() called before fit()")
        users = torch.as_tensor(user_idx).cpu().numpy()
        times = self._scoring_times

        def rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
            chunk = users[start:stop]
            return self._scoring[chunk], times[chunk] if times is not None else None

        return self._encode(rows, len(users))

    def recommend(self, user_idx: Tensor, k: int, exclude: CSR | None = None) -> tuple[Tensor, Tensor]:
        """(item_idx int64 (n, k), scores float32 (n, k)), best first, through retrieval.py."""
        scores, items = topk(self.user_vectors(user_idx), self.item_vectors(), k, exclude=exclude)
        return items.cpu(), scores.cpu()

    # --- streaming user state (eval/stream.py) ------------------------------------------------------------------

    def encode_sequences(self, items: np.ndarray, times: np.ndarray | None = None) -> Tensor:
        """(n, d) float32 user vectors of given right-aligned sequences (n, max_len) of item indices (sequences.PAD
        before them), with their timestamps for time-aware backbones: user_vectors' computation on any sequences.
        Memory: score_batch_size rows' activations at a time."""
        if self.items is None:
            raise NotFittedError(f"{type(self).__name__}.encode_sequences() called before fit()")
        return self._encode(lambda a, b: (items[a:b], times[a:b] if times is not None else None), len(items))

    def _encode(self, rows: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]], n: int) -> Tensor:
        """(n, d) float32 user states, in eval mode, of the sequences rows(start, stop) gives score_batch_size at a
        time (items, and timestamps or None)."""
        step, pad = self.training_config.score_batch_size, self.items.pad
        mask = self.items.mask if self.objective.num_special > 1 else None
        was_training = self.training
        self.eval()
        vectors = []
        with torch.no_grad():
            for start in range(0, n, step):  # batches of users, bounded activations
                chunk_items, chunk_times = rows(start, start + step)
                tokens, columns = self.objective.scoring_inputs(
                    torch.from_numpy(np.asarray(chunk_items, dtype=np.int64)).to(self.device), pad, mask
                )
                times = None
                if chunk_times is not None and self.backbone.uses_timestamps:
                    times = torch.from_numpy(np.asarray(chunk_times, dtype=np.int64))[:, columns].to(self.device)
                    if times.shape[1] < tokens.shape[1]:  # an appended token (a mask) takes the newest time
                        times = torch.cat([times, times[:, -1:]], dim=1)
                filled = (tokens != pad).any(dim=0)
                first = int(filled.float().argmax()) if bool(filled.any()) else tokens.shape[1] - 1
                tokens = tokens[:, first:]  # drop the columns that are padding in every row
                times = times[:, first:] if times is not None else None
                hidden = self.backbone(self.items(tokens), tokens != pad, times)
                vectors.append(hidden[:, -1].float())
        self.train(was_training)
        if not vectors:
            return torch.zeros((0, self.training_config.d_model), device=self.device)
        return torch.cat(vectors)

    def user_stream(self, split: Split) -> SequenceStream:
        """The streaming state (eval/stream.py): each user who acted is re-encoded from their last max_len events of
        train and the day so far (items outside train skipped); the weights stay the fit's."""
        if self.items is None or self._scoring is None:
            raise NotFittedError(f"{type(self).__name__}.user_stream() called before fit()")
        return SequenceStream(self)


class SequenceStream:
    """A sequential model's streaming state: the extended sequences of the users who acted, re-encoded."""

    shared = False
    state = "sequence re-encoded with the day's events"

    def __init__(self, model: SequentialRecommender) -> None:
        self.model = model

    def updated(self, events: UserEvents) -> StateVectors:
        """Vectors of events' users: the train tail of the scoring matrix (none for a new user) followed by their day's
        events, the newest max_len kept, right-aligned. Memory: two (n, max_len) int64 matrices per call."""
        model = self.model
        width = model.training_config.max_len
        events = events.within(model.items.num_items)
        known = events.user_idx >= 0
        lengths = np.diff(events.offsets)
        sequences = [(model._scoring, events.item_idx)]
        if model._scoring_times is not None:
            sequences.append((model._scoring_times, events.timestamp))
        out = []
        for scoring, values in sequences:
            train = np.full((events.num_users, width), PAD, dtype=np.int64)
            train[known] = np.asarray(scoring[events.user_idx[known]], dtype=np.int64)
            day = _right_aligned(values, events.offsets, width)
            out.append(_append_right(train, day, np.minimum(lengths, width)))
        vectors = model.encode_sequences(out[0], out[1] if len(out) > 1 else None)
        return StateVectors(vectors, model.item_vectors())


def _right_aligned(values: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """Each row's last `width` values at the right end of an (n, width) int64 matrix, PAD before them."""
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    out = np.full((n, width), PAD, dtype=np.int64)
    rows = np.repeat(np.arange(n), lengths)
    from_end = np.repeat(offsets[1:], lengths) - np.arange(len(values)) - 1
    keep = from_end < width
    out[rows[keep], width - 1 - from_end[keep]] = values[keep]
    return out


def _append_right(left: np.ndarray, right: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Right-aligned rows of `left` followed by each row's last counts[i] entries of right-aligned `right`, the
    newest `width` kept: column c takes right's c where c >= width - count, else left's c + count."""
    width = left.shape[1]
    columns = np.arange(width)[None, :]
    shifted = np.minimum(columns + counts[:, None], width - 1)
    return np.where(columns >= width - counts[:, None], right, np.take_along_axis(left, shifted, axis=1))


__all__ = ["SequentialRecommender", "TrainingConfig", "build_sequential"]
