"""A Yambda-like synthetic dataset in the real release layout, with the marginals of the real Yambda
(docs/data.md) and the structure that lets models be told apart (tastes, sessions, re-listening, artist runs,
popularity trends).

The generative story, per user batch, vectorized with numpy:
  catalogue  (catalogue.py) genres -> artists -> items (contiguous ranges); popularity = Pareto artist weight x
             Zipf rank in the artist; a few items are hits of one week (trends); embedding = genre + artist + noise.
  calendar   (users.py) log-normal listens per user, spread by multinomials over active days (the test day decided
             apart) and up to `session_slots` sessions a day, laid out back to back with 30+ minute gaps.
  items      (sessions.py) runs of same-artist listening ("restart" mask + forward fill); organic runs anchor on the
             user's drifting favourite artists, recommended runs on what is popular now; organic listens also
             re-listen drifting favourite tracks or explore the user's genres.
  feedback   (feedback.py) likes on re-listened (user, item) pairs, dislikes on skipped one-off listens, unlikes
             and undislikes at later events of the same pairs; 0.5% exact duplicate listens.
  guarantee  (guarantee.py) events of every type in the test day and the validation day, for any size and seed.
  writing    (writers.py, generator.py) flat and sequential files from the same tables, embeddings, mappings; the
             root is created once, atomically, even when several processes ask for it at once.

Every shape and share is a field of `Behaviour` (config.py), overridable per dataset:
`yambda-data synth --preset small --set restart=0.4 --set n_users=2000`.
"""

from yambda_dl.data.synthetic.config import (
    PRESETS,
    Behaviour,
    SynthConfig,
    field_types,
    parse_overrides,
    resolve_config,
    with_overrides,
)
from yambda_dl.data.synthetic.generator import MARKER_FILE, VERSION, SynthSummary, expected_files, generate

__all__ = [
    "MARKER_FILE",
    "PRESETS",
    "VERSION",
    "Behaviour",
    "SynthConfig",
    "SynthSummary",
    "expected_files",
    "field_types",
    "generate",
    "parse_overrides",
    "resolve_config",
    "with_overrides",
]
