"""Cost of a model call in USD, from the genai-prices table.

The table is maintained upstream (pydantic/genai-prices); a model it does not know costs
``None`` rather than a guess, and the step shows that the cost is unknown.

Every model step prices its call, and ``calc_price`` is general (tiers, cache reads,
per-request fees, units inferred from one another): about 0.1 ms a call measured alone,
and several times that within a step (docs/benchmarks.md). Most prices are flat, a rate
per token in each direction: for those, the library's own figures for a million tokens
in, a million out and none at all give the rates, once per price in force, and a call
is priced with them. A price with tiers (its rate depends on the tokens) is left to
``calc_price``, every call.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice, TieredPrices

log = logging.getLogger(__name__)

_SIX_PLACES = Decimal("0.000001")
_MTOK = 1_000_000

# Rates (fixed, per input token, per output token) by the price object they came from; None
# for a tiered price. Keyed by id() with the object kept, so an id is never reused.
_rates: dict[int, tuple[ModelPrice, tuple[Decimal, Decimal, Decimal] | None]] = {}


def model_call_cost(*, model: str, tokens_in: int, tokens_out: int) -> Decimal | None:
    try:
        _, info = get_snapshot().find_provider_model(model, None, None, None)
    except LookupError:
        log.info("no price known for model %r; cost recorded as unknown", model)
        return None
    # The price in force now (a model's price can change with the date or the hour).
    prices = info.get_prices(datetime.now(tz=UTC))
    rates = _flat_rates(prices)
    if rates is None:
        usage = Usage(input_tokens=tokens_in, output_tokens=tokens_out)
        total = calc_price(usage, model_ref=model).total_price
    else:
        fixed, per_in, per_out = rates
        total = fixed + tokens_in * per_in + tokens_out * per_out
    return Decimal(str(total)).quantize(_SIX_PLACES)


def _flat_rates(prices: ModelPrice) -> tuple[Decimal, Decimal, Decimal] | None:
    known = _rates.get(id(prices))
    if known is not None and known[0] is prices:
        return known[1]
    rates = None
    if not any(isinstance(value, TieredPrices) for value in vars(prices).values()):

        def total(tokens_in: int, tokens_out: int) -> Decimal:
            usage = Usage(input_tokens=tokens_in, output_tokens=tokens_out)
            return Decimal(str(prices.calc_price(usage)["total_price"]))

        fixed = total(0, 0)
        rates = (fixed, (total(_MTOK, 0) - fixed) / _MTOK, (total(0, _MTOK) - fixed) / _MTOK)
    _rates[id(prices)] = (prices, rates)
    return rates
