"""GRU4Rec's encoder (Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016;
Hidasi & Karatzoglou, "Recurrent Neural Networks with Top-k Gains", CIKM 2018): a GRU over the user's events, causal
by construction. The item representation and the loss are the shared parts, so `gru4rec` trains with any of the
sequential losses (the later GRU4Rec papers' sampled softmax with shared negatives is `model/loss=sampled_softmax`).

Padding: sequences arrive right-aligned (padding is a left prefix), and a GRU run over padding from a zero state
would not keep a zero state (its biases move it), so the real events would start from a different state than in an
unpadded run. Each row is therefore rotated to be left-aligned (a gather), the GRU runs over it (trailing padding
cannot reach earlier steps), and the outputs are rotated back. This is exact (the output at a real event equals an
unpadded run's) and keeps the whole batch in one fused cuDNN call; packing would need the lengths on the host (a
device sync each step) and sorting, and a per-step state reset would rule out the fused kernel. Under
torch.compile (model.compile=true) the GRU call itself stays eager (dynamo does not trace nn.GRU: one graph break);
the gathers and the projection compile.

Inputs are scaled by sqrt(d), as the transformer encoders do: the tied item table is drawn with std d^-1/2 (unit-scale
logits), which would leave the GRU's pre-activations near zero (std ~0.07 at d = 64) and its state nearly still.

Output: a linear projection of the GRU's states (on by default). GRU states are bounded in (-1, 1), so without it the
score scale h.e could only grow through the item vectors; with it the hidden size may also differ from d_model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from yambda_dl.models.sequential.backbones import Backbone, check_positive, check_probability

FLOAT = 4  # bytes per float32 value


class GRU(Backbone):
    """GRU4Rec: scaled inputs with dropout, a (stacked) GRU over left-aligned rows, an optional output projection."""

    causal = True

    def __init__(
        self,
        *,
        d_model: int = 64,
        max_len: int = 200,
        num_layers: int = 1,  # GRU4Rec: one layer
        hidden_dim: int | None = None,  # the GRU's state size; null: d_model
        dropout: float = 0.1,  # on the inputs, between stacked layers and on the output states
        projection: bool = True,  # a Linear(hidden_dim, d_model) on the states (needed when hidden_dim != d_model)
    ) -> None:
        super().__init__()
        hidden_dim = d_model if hidden_dim is None else hidden_dim
        check_positive(d_model=d_model, max_len=max_len, num_layers=num_layers, hidden_dim=hidden_dim)
        check_probability(dropout=dropout)
        if not projection and hidden_dim != d_model:
            raise ValueError(f"backbone hidden_dim={hidden_dim} differs from d_model={d_model}: set projection=true")
        self.d_model, self.max_len, self.num_layers, self.hidden_dim = d_model, max_len, num_layers, hidden_dim
        self.drop = nn.Dropout(dropout)
        # nn.GRU applies `dropout` between stacked layers only (and warns when there is a single layer)
        self.gru = nn.GRU(d_model, hidden_dim, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.projection = nn.Linear(hidden_dim, d_model) if projection else nn.Identity()

    def forward(self, x: Tensor, valid: Tensor, timestamps: Tensor | None = None) -> Tensor:
        batch, length, d = x.shape
        if length > self.max_len:
            raise ValueError(f"sequences of length {length} exceed the backbone's max_len={self.max_len}")
        columns = torch.arange(length, device=x.device)
        shift = (length - valid.sum(dim=1))[:, None]  # padding columns of each row
        # left-aligned: column j holds the row's j-th real event (then its padding, wrapped to the end)
        left = x.gather(1, ((columns + shift) % length)[..., None].expand(-1, -1, d))
        if batch == 0:  # an empty DDP padding batch: a one-row run sliced away still reaches every parameter
            left = x.new_zeros(1, length, d)
        states, _ = self.gru(self.drop(left * math.sqrt(d)))
        states = states[:batch]
        back = ((columns - shift) % length)[..., None].expand(-1, -1, self.hidden_dim)
        return self.projection(self.drop(states.gather(1, back)))

    def activation_bytes(self, batch: int, length: int) -> int:
        """Per layer: its input, the three gates' pre-activations and activations, the candidate and the state
        (~8 hidden; cuDNN's reserve space is of that order); plus the rotated inputs, dropout masks, the rotated
        outputs and the projection (~4 d + 3 hidden)."""
        tokens, d, hidden = batch * length, self.d_model, self.hidden_dim
        layers = tokens * (d + 8 * hidden + (self.num_layers - 1) * (9 * hidden)) * FLOAT
        return layers + tokens * (4 * d + 3 * hidden) * FLOAT + 2 * tokens * 8  # + the int64 gather indices
