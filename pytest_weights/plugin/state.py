"""The run's plugin state in pytest's stash, and its lazily built :class:`~.session.WeightsSession`.

Its own module so that the hooks (:mod:`pytest_weights.plugin`), the items and the replay all
reach the state without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ..errors import FATAL, WeightsError
from .messages import explain

if TYPE_CHECKING:
    from .session import WeightsSession

SESSION_KEY = pytest.StashKey["WeightsSession"]()
#: The replay of stored outcomes (:mod:`.replay`), when this run's inputs are unchanged.
REPLAY_KEY = pytest.StashKey["Replay"]()


def weights_session(config: pytest.Config) -> WeightsSession:
    """The run's :class:`~.session.WeightsSession`, set up on first use (this imports torch)."""
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        return session
    from .session import WeightsSession

    try:
        session = WeightsSession.from_config(config)
    except WeightsError as e:
        raise pytest.UsageError(str(e)) from None
    except FATAL:
        raise
    except BaseException as e:  # e.g. a directory that cannot be listed
        raise pytest.UsageError(explain(config, e)) from None
    config.stash[SESSION_KEY] = session
    return session
