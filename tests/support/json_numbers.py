"""Number spellings clients send in JSON bodies, for the equivalence tests of the Rust
front's decoders against Python's: Python's repr, JSON's exponent forms, float32 values,
integers within and beyond 15 digits, zeros, and spellings JSON or ferry's fast paths
refuse (non-finite, `1.`, `.5`, `01`, booleans, strings)."""

from __future__ import annotations

from hypothesis import strategies as st

FINITE = st.floats(allow_nan=False, allow_infinity=False)
NUMBER_TEXT = st.one_of(
    FINITE.map(repr),
    FINITE.map(lambda v: f"{v:.17g}"),
    FINITE.map(lambda v: f"{v:e}".replace("e+", "E+")),
    st.floats(-1e6, 1e6, width=32).map(repr),
    st.integers(-(10**15) + 1, 10**15 - 1).map(str),
    st.integers(-(10**20), 10**20).map(str),  # beyond 15 digits: Python's alone
    st.sampled_from(
        ["-0", "0", "-0.0", "1e400", "-1e-400", "NaN", "Infinity", "1.", ".5", "01", "true", '"1"']
    ),
)
