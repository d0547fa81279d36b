"""A model call's cost: the same figure as genai-prices' calc_price, for every priced model."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import TieredPrices

from runs.gateway import pricing
from runs.gateway.pricing import model_call_cost

TOKENS = [(0, 0), (1, 0), (0, 1), (812, 31), (123_456, 7_890), (250_000, 40_000), (1_500_000, 3)]


def _library(model: str, tokens_in: int, tokens_out: int) -> Decimal:
    price = calc_price(Usage(input_tokens=tokens_in, output_tokens=tokens_out), model_ref=model)
    return Decimal(str(price.total_price)).quantize(Decimal("0.000001"))


def _models(*, tiered: bool) -> list[str]:
    """The bundled table's models found by their own id, flat or tiered now."""
    now = datetime.now(tz=UTC)
    found = []
    for provider in get_snapshot().providers:
        for info in provider.models:
            try:
                _, same = get_snapshot().find_provider_model(info.id, None, None, None)
            except LookupError:
                continue
            if same is not info:
                continue  # another provider's model answers to this id
            has_tiers = any(
                isinstance(value, TieredPrices) for value in vars(info.get_prices(now)).values()
            )
            if has_tiers == tiered:
                found.append(info.id)
    return found


# The pinned genai-prices (0.2.3) table's models that answer to their own id. Which of them
# are flat and which tiered depends on the prices in force today (some change on a date),
# so the split is not pinned; the sum is.
MODELS_FOUND_BY_OWN_ID = 395


def test_flat_prices_give_the_librarys_figure_for_every_model():
    models = _models(tiered=False)
    assert len(models) + len(_models(tiered=True)) == MODELS_FOUND_BY_OWN_ID
    for model in models:
        for tokens_in, tokens_out in TOKENS:
            assert model_call_cost(
                model=model, tokens_in=tokens_in, tokens_out=tokens_out
            ) == _library(model, tokens_in, tokens_out), (model, tokens_in, tokens_out)


def test_tiered_prices_are_left_to_the_library():
    models = _models(tiered=True)
    assert models
    for model in models:
        for tokens_in, tokens_out in TOKENS:
            assert model_call_cost(
                model=model, tokens_in=tokens_in, tokens_out=tokens_out
            ) == _library(model, tokens_in, tokens_out), (model, tokens_in, tokens_out)
        _, info = get_snapshot().find_provider_model(model, None, None, None)
        prices = info.get_prices(datetime.now(tz=UTC))
        assert pricing._rates[id(prices)] == (prices, None)


def test_the_example_models_price_and_an_unknown_model_costs_none():
    assert model_call_cost(model="gpt-4o-mini", tokens_in=1_000_000, tokens_out=1_000_000) == (
        _library("gpt-4o-mini", 1_000_000, 1_000_000)
    )
    # 812 x 0.15 + 31 x 0.60 USD a million tokens = 0.0001404, to the micro-dollar.
    assert model_call_cost(model="gpt-4o-mini", tokens_in=812, tokens_out=31) == Decimal("0.000140")
    assert model_call_cost(model="no-such-model-anywhere", tokens_in=812, tokens_out=31) is None


@pytest.mark.parametrize("tokens", [(812, 31), (0, 0)])
def test_rates_are_computed_once_per_price_in_force(
    monkeypatch: pytest.MonkeyPatch, tokens: tuple[int, int]
):
    monkeypatch.setattr(pricing, "_rates", {})
    calls: list[object] = []
    original = pricing.ModelPrice.calc_price

    def counted(self: object, usage: object) -> object:
        calls.append(usage)
        return original(self, usage)  # type: ignore[arg-type]

    monkeypatch.setattr(pricing.ModelPrice, "calc_price", counted)
    first = model_call_cost(model="gpt-4o-mini", tokens_in=tokens[0], tokens_out=tokens[1])
    second = model_call_cost(model="gpt-4o-mini", tokens_in=tokens[0], tokens_out=tokens[1])
    assert len(calls) == 3  # none, a million in, a million out; then nothing
    assert first == second == _library("gpt-4o-mini", *tokens)
