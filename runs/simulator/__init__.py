"""A deterministic OpenAI Chat Completions server that plays the example support agent.

Stdlib only (no Django, no openai): tests, the demo and benchmarks start it in-process
(``Simulator``) or as a process (``python -m runs.simulator`` / ``manage.py simulate_llm``).
See docs/simulator.md.
"""

from runs.simulator.brain import Decision, ToolCall, decide
from runs.simulator.config import ConfigError, SimulatorConfig
from runs.simulator.server import Simulator, serve

__all__ = [
    "ConfigError",
    "Decision",
    "Simulator",
    "SimulatorConfig",
    "ToolCall",
    "decide",
    "serve",
]
