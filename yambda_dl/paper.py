"""The Yambda paper's results (docs/protocol.md, "Paper results"; test day, paper-compatible metrics), for reports.

PAPER[(size, setup)][model] = {metric: value}; metric names are ours: paper_ndcg@k, paper_recall@k, coverage@k.
"""

from __future__ import annotations

_COLUMNS_6 = (
    "paper_ndcg@10",
    "paper_ndcg@100",
    "paper_recall@10",
    "paper_recall@100",
    "coverage@10",
    "coverage@100",
)
_COLUMNS_4 = _COLUMNS_6[:4]


def _rows(columns: tuple[str, ...], table: dict[str, tuple[float, ...]]) -> dict[str, dict[str, float]]:
    return {model: dict(zip(columns, values, strict=True)) for model, values in table.items()}


PAPER: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("50m", "listen_plus"): _rows(
        _COLUMNS_6,
        {
            "random": (0.0000, 0.0000, 0.0000, 0.0002, 0.1363, 0.7692),
            "mostpop": (0.0186, 0.0249, 0.0064, 0.0321, 0.0000, 0.0002),
            "decaypop": (0.0260, 0.0323, 0.0122, 0.0479, 0.0000, 0.0002),
            "itemknn": (0.0781, 0.0934, 0.0373, 0.1297, 0.0180, 0.0874),
            "ials": (0.0407, 0.0642, 0.0128, 0.0808, 0.0044, 0.0156),
            "bpr": (0.0389, 0.0641, 0.0139, 0.0836, 0.0257, 0.0999),
            "sansa": (0.0069, 0.0095, 0.0031, 0.0137, 0.0114, 0.0730),
            "sasrec": (0.0748, 0.0764, 0.0325, 0.1026, 0.0130, 0.0310),
        },
    ),
    ("500m", "listen_plus"): _rows(
        _COLUMNS_4,
        {
            "mostpop": (0.0173, 0.0237, 0.0060, 0.0309),
            "decaypop": (0.0267, 0.0340, 0.0127, 0.0505),
            "itemknn": (0.0708, 0.0771, 0.0320, 0.1049),
            "ials": (0.0384, 0.0621, 0.0131, 0.0811),
            "bpr": (0.0400, 0.0652, 0.0137, 0.0861),
            "sasrec": (0.0754, 0.0884, 0.0336, 0.1240),
        },
    ),
    ("5b", "listen_plus"): _rows(
        _COLUMNS_4,
        {
            "mostpop": (0.0175, 0.0239, 0.0062, 0.0313),
            "decaypop": (0.0271, 0.0348, 0.0130, 0.0509),
            "ials": (0.0388, 0.0628, 0.0132, 0.0816),
            "bpr": (0.0408, 0.0664, 0.0141, 0.0870),
            "sasrec": (0.0647, 0.0847, 0.0289, 0.1214),
        },
    ),
    ("50m", "like"): _rows(
        _COLUMNS_4,
        {
            "mostpop": (0.0046, 0.0097, 0.0083, 0.0222),
            "decaypop": (0.0180, 0.0269, 0.0333, 0.0651),
            "itemknn": (0.0125, 0.0251, 0.0199, 0.0648),
            "ials": (0.0078, 0.0224, 0.0103, 0.0568),
            "bpr": (0.0056, 0.0187, 0.0073, 0.0526),
            "sansa": (0.0068, 0.0203, 0.0105, 0.0616),
            "sasrec": (0.0100, 0.0208, 0.0175, 0.0603),
        },
    ),
    ("5b", "like"): _rows(
        _COLUMNS_4,
        {
            "decaypop": (0.0165, 0.0267, 0.0281, 0.0733),
            "sasrec": (0.0136, 0.0348, 0.0217, 0.1026),
        },
    ),
}

REPORT_COLUMNS = _COLUMNS_6


def paper_result(size: str, setup: str, model: str) -> dict[str, float] | None:
    """The paper's figures for this dataset size, setup and model, or None where the paper has none."""
    return PAPER.get((size, setup), {}).get(model)
