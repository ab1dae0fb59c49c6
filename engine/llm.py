"""litellm, offline and priced: its import, and the most a request could cost."""
from __future__ import annotations

import os
from typing import Any

REPLY_TOKENS = 4096  # the most a reply may be, which bounds a call's cost


def import_litellm() -> Any:
    """litellm, imported offline: its import fetches a price map from the network unless told
    to use the copy it ships."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def worst_case_cost(litellm: Any, model: str, messages: list[dict]) -> float | None:
    """The most a call could cost in USD: its prompt's tokens and REPLY_TOKENS of reply at the
    model's prices; None where litellm has no price for the model."""
    try:
        prompt = litellm.token_counter(model=model, messages=messages)
        costs = litellm.cost_per_token(model=model, prompt_tokens=prompt,
                                       completion_tokens=REPLY_TOKENS)
    except Exception:  # litellm raises for a model it has no price for
        return None
    return float(sum(costs))
