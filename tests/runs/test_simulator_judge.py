"""The simulator's judge: rubric scoring as pure functions, then through the HTTP server.

The server checks use the real ``openai`` SDK against an in-process ``Simulator`` on
loopback (mistakes off, so scores are exact) and against the session's simulator process
(default knobs, so the judge's noise is on and must still match the pure function).
No database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from runs.simulator import Simulator, SimulatorConfig, decide
from runs.simulator.judge import (
    Judgement,
    content_stems,
    criterion_met,
    judge,
    parse_judge_request,
    rubric_criteria,
)
from runs.simulator.protocol import ChatRequest, canonical_json, conversation_digest
from tests.processes import Simulator as SimulatorProcess

MODEL = "sim-small"
RUBRIC = (
    "- Confirms the refund of 18.00 EUR\n"
    "- Apologises for the damaged mug\n"
    "- Gives a tracking number"
)
ANSWER = "We refunded 18.00 EUR for your broken mug. Sorry about the damage!"
REASON = (
    'Met 2 of 3 criteria: met "Confirms the refund of 18.00 EUR", "Apologises for the '
    'damaged mug"; missed "Gives a tracking number".'
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_customer",
            "parameters": {
                "type": "object",
                "properties": {"email": {"type": "string"}},
                "required": ["email"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "handoff_to_human",
            "parameters": {
                "type": "object",
                "properties": {"ticket_id": {"type": "string"}, "summary": {"type": "string"}},
                "required": ["ticket_id", "summary"],
            },
        },
    },
]


def judge_messages(rubric: str = RUBRIC, answer: str = ANSWER) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You grade support answers against a rubric (judge v3)."},
        {"role": "user", "content": f"RUBRIC:\n{rubric}\n\nANSWER:\n{answer}"},
    ]


# --- criteria and words ----------------------------------------------------------------------


def test_bullets_are_stripped_and_blank_lines_dropped():
    rubric = (
        "- dash\n* star\n+ plus\n• dot\n1. one\n2) two\n(3) three\na) letter\n"
        "[ ] box\n- 1. nested\n\n   \n-\nplain line\n"
    )

    assert rubric_criteria(rubric) == [
        "dash",
        "star",
        "plus",
        "dot",
        "one",
        "two",
        "three",
        "letter",
        "box",
        "nested",
        "plain line",
    ]


def test_text_that_only_looks_like_a_bullet_is_kept():
    assert rubric_criteria("e.g. refunds\n3.5 kg parcel\n10% discount") == [
        "e.g. refunds",
        "3.5 kg parcel",
        "10% discount",
    ]


def test_content_words_are_long_lowercased_stems_without_stopwords():
    assert content_stems("The answer MENTIONS that Jane was refunded 18 EUR for a Mug") == [
        "jane",
        "refun",
    ]


def test_stems_match_across_word_forms():
    assert criterion_met("Refunded the damaged items", "I refund the damage on each item")
    assert not criterion_met("Refunded", "We refused it")  # "refun" is not "refus"


def test_half_of_the_content_words_meet_a_criterion():
    assert criterion_met("refund order", "your refund")  # 1 of 2
    assert not criterion_met("refund order tracking", "your refund")  # 1 of 3
    assert criterion_met("ok", "anything")  # no content words to miss


# --- scores ----------------------------------------------------------------------------------


def test_all_criteria_met():
    result = judge("- refund issued\n- apologise", "Refund issued; we apologise.")

    assert result == Judgement(
        score=1.0,
        verdict="pass",
        reason='Met 2 of 2 criteria: met "refund issued", "apologise".',
        criteria=("refund issued", "apologise"),
        met=(True, True),
    )


def test_no_criterion_met():
    result = judge("- refund issued\n- tracking number given", "Hello there.")

    assert (result.score, result.verdict, result.met) == (0.0, "fail", (False, False))
    assert result.reason == (
        'Met 0 of 2 criteria: missed "refund issued", "tracking number given".'
    )


def test_partial_scores_round_to_two_places():
    passing = judge(RUBRIC, ANSWER)
    failing = judge(RUBRIC, "We refunded 18.00 EUR.")

    assert (passing.score, passing.verdict, passing.reason) == (0.67, "pass", REASON)
    assert (failing.score, failing.verdict, failing.met) == (0.33, "fail", (True, False, False))


def test_half_the_criteria_is_a_pass():
    result = judge("1. refund\n2. tracking", "Your refund is done.")

    assert (result.score, result.verdict) == (0.5, "pass")


@pytest.mark.parametrize("answer", ["", "   \n\t"])
def test_an_empty_answer_scores_zero(answer: str):
    result = judge(RUBRIC, answer, seed=3, noise_rate=1.0)

    assert result == Judgement(
        score=0.0,
        verdict="fail",
        reason="The answer is empty, so no criterion is met.",
        criteria=(
            "Confirms the refund of 18.00 EUR",
            "Apologises for the damaged mug",
            "Gives a tracking number",
        ),
        met=(False, False, False),
    )


def test_a_rubric_without_criteria_passes_a_non_empty_answer():
    result = judge("\n  \n- \n", "Anything at all.", noise_rate=1.0)

    assert result == Judgement(
        1.0, "pass", "The rubric lists no criteria and the answer is not empty."
    )


def test_the_seed_does_not_change_the_score_without_noise():
    assert {judge(RUBRIC, ANSWER, seed=seed) for seed in range(20)} == {judge(RUBRIC, ANSWER)}


def test_noise_is_deterministic_per_seed():
    noisy = [judge(RUBRIC, ANSWER, seed=seed, noise_rate=0.5) for seed in range(20)]

    assert noisy == [judge(RUBRIC, ANSWER, seed=seed, noise_rate=0.5) for seed in range(20)]
    assert len({result.met for result in noisy}) > 1  # the seed matters once noise is on
    flipped = judge(RUBRIC, ANSWER, seed=1, noise_rate=1.0)
    assert (flipped.score, flipped.verdict, flipped.met) == (0.33, "fail", (False, False, True))


def test_as_content_is_the_contract_json():
    assert json.loads(judge(RUBRIC, ANSWER).as_content()) == {
        "score": 0.67,
        "verdict": "pass",
        "reason": REASON,
    }


# --- recognising a judge request -------------------------------------------------------------


def test_the_last_user_message_is_parsed_into_rubric_and_answer():
    messages = [
        {"role": "user", "content": "RUBRIC:\nold\n\nANSWER:\nold"},
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": [{"type": "text", "text": "RUBRIC:\n- a\n\nANSWER:\nb"}]},
    ]

    assert parse_judge_request(messages) == ("- a", "b")
    assert parse_judge_request(judge_messages()) == (RUBRIC, ANSWER)


@pytest.mark.parametrize(
    "text",
    [
        "Please grade. RUBRIC:\n- a\n\nANSWER:\nb",  # does not start with RUBRIC:
        "RUBRIC:\n- a\nANSWER:\nb",  # no blank line before ANSWER:
        "Ticket T-0007 from jane@example.com\nSubject: Refund",
    ],
)
def test_other_user_messages_are_not_judge_requests(text: str):
    assert parse_judge_request([{"role": "user", "content": text}]) is None


def test_a_conversation_without_a_user_message_is_not_a_judge_request():
    assert parse_judge_request([{"role": "system", "content": "RUBRIC:\n\n\nANSWER:\n"}]) is None


# --- through the server ----------------------------------------------------------------------


@pytest.fixture
def start_sim() -> Iterator[Callable[..., Simulator]]:
    """Start in-process simulators (mistakes off unless asked); all stopped at teardown."""
    started: list[Simulator] = []

    def start(**knobs: Any) -> Simulator:
        sim = Simulator(SimulatorConfig().updated({"mistake_rate": 0.0, **knobs})).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def client_for(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=5.0)


def agent_reply(messages: list[dict[str, Any]], tools: list[dict[str, Any]], seed: int) -> Any:
    """The support agent's decision for this request, as the server seeds it."""
    request = ChatRequest(MODEL, messages, tools, "auto" if tools else "none", True)
    return decide(messages, tools, f"{seed}:{conversation_digest(request)}", 0.0)


def test_a_judge_request_gets_the_score_as_json(start_sim: Callable[..., Simulator]):
    sim = start_sim(seed=11)
    messages = judge_messages()

    completion = client_for(sim.base_url).chat.completions.create(model=MODEL, messages=messages)

    choice = completion.choices[0]
    content = choice.message.content
    assert content == judge(RUBRIC, ANSWER).as_content()
    assert json.loads(content) == {"score": 0.67, "verdict": "pass", "reason": REASON}
    assert (choice.finish_reason, choice.message.tool_calls) == ("stop", None)
    assert completion.usage is not None
    prompt_tokens = math.ceil(len(canonical_json([messages, []])) / 4)
    completion_tokens = math.ceil(len(content) / 4)
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


def test_a_judge_prompt_with_tools_gets_the_agent(start_sim: Callable[..., Simulator]):
    sim = start_sim(seed=11)
    messages = judge_messages()
    expected = agent_reply(messages, TOOLS, seed=11)

    completion = client_for(sim.base_url).chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS
    )

    message = completion.choices[0].message
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    assert expected.tool_calls  # the agent acts on it; a judge would not call a tool
    assert calls == [(call.name, call.arguments) for call in expected.tool_calls]
    assert message.content == expected.content


def test_other_requests_without_tools_get_the_agent(start_sim: Callable[..., Simulator]):
    sim = start_sim(seed=11)
    messages = judge_messages()
    messages[-1]["content"] = messages[-1]["content"].replace("\n\nANSWER:\n", "\nANSWER:\n")
    expected = agent_reply(messages, [], seed=11)

    completion = client_for(sim.base_url).chat.completions.create(model=MODEL, messages=messages)

    assert expected.content
    assert completion.choices[0].message.content == expected.content
    assert completion.choices[0].message.tool_calls is None


def test_the_session_simulator_judges_with_its_seed_and_noise(simulator: SimulatorProcess):
    config = simulator.configure(faults=0, latency_ms=0)  # seed and judge noise as found
    client = client_for(simulator.base_url)

    contents = [
        client.chat.completions.create(model=MODEL, messages=judge_messages()).choices[0]
        for _ in range(2)
    ]

    expected = judge(RUBRIC, ANSWER, seed=config["seed"], noise_rate=config["judge_noise_rate"])
    assert [choice.message.content for choice in contents] == [expected.as_content()] * 2


def test_the_server_passes_judge_noise_rate_as_the_judge_noise(
    start_sim: Callable[..., Simulator],
):
    sim = start_sim(seed=11, judge_noise_rate=1.0)

    completion = client_for(sim.base_url).chat.completions.create(
        model=MODEL, messages=judge_messages()
    )

    content = completion.choices[0].message.content
    assert content == judge(RUBRIC, ANSWER, seed=11, noise_rate=1.0).as_content()
    assert json.loads(content or "{}")["score"] == 0.33  # every criterion flipped
