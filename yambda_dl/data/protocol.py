"""The evaluation protocol's constants in one place (docs/protocol.md): the time axis, its windows and thresholds.

The split (split.Protocol's defaults), the statistics, the schema's value checks and the synthetic generator all read
these names; none spells the numbers again. A run changes them through split.Protocol's fields (config keys), never
by editing this module.
"""

from __future__ import annotations

LAST_TIMESTAMP = 26_000_000  # seconds; the end of Yambda's global time axis (the last test second, included)
DAY = 86_400  # seconds; the length of the test day and of the validation day
GAP = 1_800  # seconds; the gap left out between train and each target window (30 minutes)
TEST_START = LAST_TIMESTAMP - DAY  # the first second of the test day: [TEST_START, LAST_TIMESTAMP]
VALIDATION_START = TEST_START - GAP - DAY  # tune mode's target day: [VALIDATION_START, TEST_START - GAP)
LISTEN_PLUS_MIN_RATIO = 50  # a listen is Listen+ when played_ratio_pct >= 50 (the official code's >=)
TIMESTAMP_STEP = 5  # timestamps are floored to multiples of 5 seconds (the 5-second grid)
