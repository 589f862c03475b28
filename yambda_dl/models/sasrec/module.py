"""SASRec as a LightningModule: the glue between the split's sequences, the network, the losses and the Trainer.

`fit(split, trainer)` builds what the split implies (network sized to the catalogue, scoring sequences, negative
sampler), checks the memory estimate, and trains through the given Trainer (or a small CPU one). Scoring follows the
VectorRecommender contract: the user vector is the last hidden state of the user's last `max_len` train events, item
vectors are the tied embedding table, and retrieval.py ranks them.
Memory: the network and Adam state (16 bytes per parameter, most of them in the items x d embedding table), one
batch's activations and loss (memory.py prints the estimate), and the scoring sequences, memory-mapped from disk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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
from yambda_dl.models.base import NotFittedError
from yambda_dl.models.sasrec import losses, memory
from yambda_dl.models.sasrec.losses import LossConfig
from yambda_dl.models.sasrec.negatives import make_sampler
from yambda_dl.models.sasrec.network import NetworkConfig, SASRecNetwork
from yambda_dl.retrieval import topk
from yambda_dl.utils.memory import GIB, available_bytes, check_fits

if TYPE_CHECKING:
    from yambda_dl.data.split import Split
    from yambda_dl.retrieval import CSR


@dataclass(frozen=True)
class TrainingConfig:
    """How SASRec trains and scores; the defaults are the paper's Adam 1e-3, batch 256 users, 100 epochs."""

    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 100
    shuffle_buffer: int = 8192  # users mixed before batching, per dataloader worker
    num_workers: int = 0  # dataloader workers per process (0: read in the training process)
    seed: int = 0  # weights, data order, dropout and negatives all follow from it
    compile: bool = False  # torch.compile the network (GPU runs; CPU tests stay eager)
    ckpt_path: str | None = None  # resume from this checkpoint (yambda-train resolves "last" to the run's last.ckpt)
    early_stopping_patience: int | None = None  # validations without improvement before stopping (tune mode)
    early_stopping_monitor: str = "val/ndcg@100"  # the sweep objective RankingEvaluation logs
    score_batch_size: int = 1024  # users per forward pass when computing user vectors
    memory_fraction: float = 0.9  # refuse a configuration whose estimate exceeds this share of free memory

    def __post_init__(self) -> None:
        if self.lr <= 0 or min(self.batch_size, self.epochs, self.score_batch_size) < 1:
            raise ValueError(f"need lr > 0 and batch_size, epochs, score_batch_size >= 1: {self}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1 or null, got {self.early_stopping_patience}")


CONFIGS = (NetworkConfig, LossConfig, TrainingConfig)


def build_sasrec(**keys: Any) -> SASRec:
    """SASRec from the flat keys of configs/model/sasrec.yaml (model.d_model, model.loss, model.epochs, ...).

    Each key goes to the config dataclass that owns it; an unknown key is an error naming the valid ones.
    """
    owner = {f.name: cls for cls in CONFIGS for f in fields(cls)}
    unknown = sorted(set(keys) - set(owner))
    if unknown:
        raise TypeError(f"unknown SASRec key(s) {unknown}; valid choices: {', '.join(sorted(owner))}")
    parts = [cls(**{k: v for k, v in keys.items() if owner[k] is cls}) for cls in CONFIGS]
    return SASRec(*parts)


@rank_zero_only
def _announce(message: str) -> None:
    print(message, flush=True)


class SASRec(lightning.LightningModule):
    """The paper's SASRec, trainable on one device or many (DDP), scored through retrieval.py."""

    def __init__(
        self,
        network: NetworkConfig | None = None,
        loss: LossConfig | None = None,
        training: TrainingConfig | None = None,
    ) -> None:
        super().__init__()
        self.net_config = network or NetworkConfig()
        self.loss_config = loss or LossConfig()
        self.training_config = training or TrainingConfig()
        self.max_epochs = self.training_config.epochs  # train.py hands it to the Trainer
        hparams = {**asdict(self.net_config), **asdict(self.loss_config), **asdict(self.training_config)}
        self.save_hyperparameters(hparams)  # plain values: checkpoints stay loadable with weights_only
        self.network: SASRecNetwork | None = None
        self._scoring: np.ndarray | None = None  # (num_users, max_len) memory-mapped scoring sequences
        self._sampler = None
        self._datamodule: SequenceDataModule | None = None

    # --- fit -------------------------------------------------------------------------------------------------

    def fit(self, split: Split, trainer: lightning.Trainer | None = None) -> SASRec:
        """Train on the split's train sequences; scoring then uses each ranked user's last max_len train events."""
        cfg = self.training_config
        if cfg.early_stopping_patience is not None and split.protocol.mode != "tune":
            raise ValueError(
                "model.early_stopping_patience needs validation metrics: set protocol.mode=tune (or "
                "model.early_stopping_patience=null)"
            )
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            self.network = SASRecNetwork(split.num_items, self.net_config)
        if self.loss_config.loss != "full_ce":
            popularity = self.loss_config.negative_sampler == "popularity"
            counts = views.item_counts(split) if popularity else np.ones(split.num_items)  # uniform: length only
            self._sampler = make_sampler(self.loss_config.negative_sampler, counts, self.loss_config.popularity_alpha)
        trainer = trainer or self._default_trainer()
        self._check_memory(split.num_items, trainer.strategy.root_device)
        # built before trainer.fit: under DDP the other ranks start inside it and find the files ready
        max_len = self.net_config.max_len
        self._scoring = scoring_matrix(split, max_len, source=user_sequences(split, max_len + 1))
        self._datamodule = SequenceDataModule(
            split, max_len, cfg.batch_size, cfg.shuffle_buffer, cfg.num_workers, cfg.seed
        )
        if cfg.compile:
            self.network.compile()  # in place: checkpoints keep the eager module's keys
        trainer.fit(self, datamodule=self._datamodule, ckpt_path=cfg.ckpt_path)
        return self

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
        needed = memory.estimate(num_items, self.net_config, self.loss_config, self.training_config.batch_size)
        what = (
            f"SASRec ({num_items:,} items, d={self.net_config.d_model}, batch {self.training_config.batch_size} x "
            f"{self.net_config.max_len}, loss {self.loss_config.loss}) on {device}"
        )
        available = available_bytes(device)
        _announce(f"{what}: memory estimate {needed.describe()} of {available / GIB:.2f} GiB free")
        check_fits(
            needed.total,
            what,
            device,
            self.training_config.memory_fraction,
            detail=f" ({needed.describe()})",
            hint=memory.HINT,
            estimate=True,
            available=available,
        )

    # --- Lightning hooks -------------------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.training_config.lr)

    def configure_callbacks(self) -> list[lightning.Callback]:
        """Early stopping, when asked. Checkpoints are the Trainer's (the app's callbacks group writes them into
        <run folder>/checkpoints, where model.ckpt_path=last finds them)."""
        callbacks: list[lightning.Callback] = []
        cfg = self.training_config
        if cfg.early_stopping_patience is not None:
            # checked at train epoch end, after RankingEvaluation (a Trainer callback, so it runs first) logs
            callbacks.append(
                EarlyStopping(
                    cfg.early_stopping_monitor,
                    patience=cfg.early_stopping_patience,
                    mode="max",
                    check_on_train_epoch_end=True,
                )
            )
        return callbacks

    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        items = batch["items"]  # (b, L + 1) right-aligned, PAD on the left
        inputs, targets = items[:, :-1], items[:, 1:]
        valid = (inputs != PAD) & (targets != PAD)  # (b, L): positions with an input and a next event
        # A step's randomness (dropout, negatives) depends only on (seed, rank, step): a run resumed from a
        # checkpoint repeats the one that ran through, whatever happened to the global RNG in between.
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(self._step_seed())
            hidden = self.network(inputs.masked_fill(inputs == PAD, self.network.pad))
            loss = self._loss(hidden[valid], targets[valid])
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=max(int(valid.sum()), 1))
        return loss

    def _step_seed(self) -> int:
        return int(
            np.random.SeedSequence([self.training_config.seed, self.global_rank, self.global_step]).generate_state(1)[0]
        )

    def _loss(self, hidden: Tensor, positives: Tensor) -> Tensor:
        """The configured loss over the real positions: hidden (P, d), positives (P,)."""
        cfg, items = self.loss_config, self.network.item_vectors()
        if cfg.loss == "full_ce":
            return losses.full_cross_entropy(hidden, positives, items, cfg.ce_chunk_items)
        if cfg.loss == "bce":
            negatives = self._sampler.sample((len(positives), cfg.num_negatives), hidden.device)
            return losses.bce(hidden, positives, items, negatives)
        negatives = self._sampler.sample((cfg.num_negatives,), hidden.device)
        if cfg.loss == "gbce":
            beta = losses.gbce_beta(cfg.num_negatives, self.network.num_items, cfg.gbce_t)
            return losses.gbce(hidden, positives, items, negatives, beta)
        if not cfg.logq_correction:
            return losses.sampled_softmax(hidden, positives, items, negatives)
        log_q = self._sampler.log_q
        return losses.sampled_softmax(hidden, positives, items, negatives, log_q(positives), log_q(negatives))

    # --- scoring (VectorRecommender) ---------------------------------------------------------------------------

    def item_vectors(self) -> Tensor:
        """(num_items, d) float32: the tied item embeddings."""
        if self.network is None:
            raise NotFittedError("SASRec.item_vectors() called before fit()")
        return self.network.item_vectors().detach().float()

    def user_vectors(self, user_idx: Tensor) -> Tensor:
        """(n, d) float32: the last hidden state of each user's last max_len train events, in eval mode.

        Memory: score_batch_size users' activations at a time.
        """
        if self.network is None or self._scoring is None:
            raise NotFittedError("SASRec.user_vectors() called before fit()")
        users = torch.as_tensor(user_idx).cpu().numpy()
        step = self.training_config.score_batch_size
        was_training = self.network.training
        self.network.eval()
        vectors = []
        with torch.no_grad():
            for start in range(0, len(users), step):  # batches of users, bounded activations
                rows = np.asarray(self._scoring[users[start : start + step]], dtype=np.int64)
                filled = (rows != PAD).any(axis=0)
                rows = rows[:, int(np.argmax(filled)) if filled.any() else -1 :]  # drop all-PAD columns
                items = torch.from_numpy(rows).to(self.device)
                vectors.append(self.network(items.masked_fill(items == PAD, self.network.pad))[:, -1].float())
        self.network.train(was_training)
        if not vectors:
            return torch.zeros((0, self.net_config.d_model), device=self.device)
        return torch.cat(vectors)

    def recommend(self, user_idx: Tensor, k: int, exclude: CSR | None = None) -> tuple[Tensor, Tensor]:
        """(item_idx int64 (n, k), scores float32 (n, k)), best first, through retrieval.py."""
        scores, items = topk(self.user_vectors(user_idx), self.item_vectors(), k, exclude=exclude)
        return items.cpu(), scores.cpu()
