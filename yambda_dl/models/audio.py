"""The split's audio vectors as model inputs, shared by the sequential item representations (models/sequential/
items.py) and the factor models' warm start (iALS, BPR with init=audio): the view's vectors and their reduction to a
model's width (PCA or a random projection, fitted on the train items that have a vector).

Memory: the view is memory-mapped (data/embeddings.item_embeddings); the reduction reads it in row chunks and holds
its (n, d) output, a few times over while it is masked and scaled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

REDUCTIONS = ("pca", "random")


def load_audio(
    split: Split | None, column: str, num_items: int, repr_name: str, owner: str | None = None
) -> tuple[Tensor, Tensor]:
    """The split's audio vectors (num_items, 128) float32 (zeros where missing) and the `present` mask (bool).

    owner: who asks, in the errors (default: the sequential item representation `repr_name`)."""
    owner = f"model.item_repr {repr_name}" if owner is None else owner
    if split is None:
        raise ValueError(f"{owner} needs the split (its items' audio vectors); got split=None")
    from yambda_dl.data.embeddings import item_embeddings

    view = item_embeddings(split, column=column)
    if view.num_items != num_items:
        raise ValueError(f"{owner}: the audio view has {view.num_items} items, the model {num_items}")
    return view.tensor(), view.present_tensor()


def reduce_audio(
    vectors: Tensor,
    present: Tensor,
    d: int,
    method: str,
    rms: float,
    chunk: int = 1 << 16,
    generator: torch.Generator | None = None,
    key: str = "model.item_repr.reduce",
    width: str = "d_model",
) -> Tensor:
    """(n, 128) -> (n, d) float32: PCA (top-d principal directions) or a Gaussian random projection, fitted on the
    rows with a vector and scaled so that their entries have root-mean-square `rms`; rows without a vector are 0.

    PCA accumulates the mean and the 128 x 128 covariance in float64 over row chunks (memory: one chunk), and fixes
    each direction's sign (largest entry positive) so the result does not depend on the eigen-solver's choices.
    The random projection draws from `generator` (torch's global RNG when None: the caller seeds it). key and
    width name the method's config key and the width's in the error for PCA wider than the vectors.
    """
    dim = vectors.shape[1]
    n_present = int(present.sum())
    if method == "pca":
        if d > dim:
            raise ValueError(
                f"{key}=pca gives at most {dim} dimensions; {width}={d} needs {key.rsplit('.')[-1]}=random"
            )
        total, outer = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dim, dtype=torch.float64)
        for start in range(0, len(vectors), chunk):
            rows = vectors[start : start + chunk][present[start : start + chunk]].double()
            total += rows.sum(0)
            outer += rows.T @ rows
        mean = total / max(n_present, 1)
        covariance = outer / max(n_present, 1) - torch.outer(mean, mean)
        _, eigenvectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
        components = eigenvectors[:, -d:].flip(1)
        signs = torch.sign(components.gather(0, components.abs().argmax(0, keepdim=True)))
        weight, shift = (components * signs).float(), mean.float()
    else:
        weight, shift = torch.randn(dim, d, generator=generator) / d**0.5, torch.zeros(dim)
    out = torch.zeros(len(vectors), d)
    for start in range(0, len(vectors), chunk):
        out[start : start + chunk] = (vectors[start : start + chunk].float() - shift) @ weight
    out[~present] = 0.0
    scale = out[present].pow(2).mean().sqrt() if n_present else torch.tensor(1.0)
    return out * (rms / scale.clamp_min(1e-12))
