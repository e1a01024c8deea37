"""Hypothesis strategies for agent states: JSON objects that change a little at a time."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SCALARS = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=6)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)
STATES: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(max_size=4), VALUES | st.lists(VALUES, max_size=3), max_size=6
)


# Added to every state of a history: makes it longer than SMALL_STATE, so that
# deltas are written (a small state is always written whole).
PAD_KEY, PAD = "~~pad", "p" * 300


@st.composite
def histories(draw: st.DrawFn, max_size: int = 12) -> list[dict[str, Any]]:
    """A sequence of states, each the previous one with a few keys set or removed,
    or items appended to a list (so deltas are usually smaller than the state),
    sometimes a wholly new one."""
    states = [draw(STATES)]
    for _ in range(draw(st.integers(0, max_size))):
        if draw(st.integers(0, 9)) == 0:
            states.append(draw(STATES))
            continue
        state = dict(states[-1])
        lists = sorted(key for key, value in state.items() if isinstance(value, list))
        if lists and draw(st.booleans()):
            key = draw(st.sampled_from(lists))
            state[key] = [*state[key], *draw(st.lists(VALUES, min_size=1, max_size=3))]
            states.append(state)
            continue
        for key, value in draw(st.dictionaries(st.text(max_size=4), VALUES, max_size=2)).items():
            state[key] = value
        for key in draw(st.lists(st.sampled_from(sorted(state) or [""]), max_size=1)):
            state.pop(key, None)
        states.append(state)
    return [{**state, PAD_KEY: PAD} for state in states]
