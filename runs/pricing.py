"""Cost of a model call in USD, from the genai-prices table.

The table is maintained upstream (pydantic/genai-prices); a model it does not know costs
``None`` rather than a guess, and the step shows that the cost is unknown.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from genai_prices import Usage, calc_price

log = logging.getLogger(__name__)

_SIX_PLACES = Decimal("0.000001")


def model_call_cost(*, model: str, tokens_in: int, tokens_out: int) -> Decimal | None:
    try:
        price = calc_price(Usage(input_tokens=tokens_in, output_tokens=tokens_out), model_ref=model)
    except LookupError:
        log.info("no price known for model %r; cost recorded as unknown", model)
        return None
    return Decimal(str(price.total_price)).quantize(_SIX_PLACES)
