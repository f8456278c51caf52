"""Answer kinds are one table: the client's computations and the reply's arrays name the same
kinds, and a kind nobody registered fails loudly instead of taking another kind's branch."""

from __future__ import annotations

import pytest
from fedgan.clients.answers import ANSWER_KINDS, _step_fn
from fedgan.simulator.messages import ANSWER_ARRAYS, ANSWERS, answer_keys, answer_shapes
from fedgan.simulator.prepare import make_gan

from tests.conftest import tiny


def test_every_kind_is_in_both_tables() -> None:
    assert set(ANSWER_KINDS) == set(ANSWER_ARRAYS) == set(ANSWERS)


def test_shapes_by_hand() -> None:
    """MD-GAN answers e [B, d]; UA-GAN the logits [B] and their input gradients [B, d]."""
    assert answer_shapes("feedback", 7, 3) == {"answer.feedback": (7, 3)}
    assert answer_shapes("logits", 7, 3) == {"answer.logits": (7,), "answer.logit_grads": (7, 3)}
    assert answer_keys("logits") == ("answer.logits", "answer.logit_grads")


def test_an_unknown_kind_is_an_error_not_another_kind() -> None:
    with pytest.raises(KeyError):
        answer_keys("scores")
    with pytest.raises(KeyError):
        answer_shapes("scores", 4, 2)
    with pytest.raises(KeyError):
        _step_fn(make_gan(tiny()), "scores", 1.0)
