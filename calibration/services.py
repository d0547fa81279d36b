"""A calibration report of one agent's tool, and a recommendation applied as a new version.

The report is computed on the labels of one release (the production release by default):
a recommendation is evidence about the prompt and model that produced those calls. The
threshold it would replace is the production configuration's. Applying it stores a new
configuration version with that one threshold changed (audited by
releases.configuration.config_version_create); activating it is the usual move, with its
diff, through the promotion gate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from calibration.data import labels_for
from calibration.stats import (
    Bin,
    CurvePoint,
    Recommendation,
    automation_curve,
    expected_calibration_error,
    recommend,
    reliability,
)
from releases.configuration import config_effective, config_version_create
from releases.models import AgentConfigVersion, Release
from releases.services import release_production

if TYPE_CHECKING:
    from django.contrib.auth.models import User

DEFAULTS = {"alpha": 0.02, "delta": 0.05, "min_labels": 100}


class RecommendationRefused(ValueError):
    """The recommendation cannot be applied; the message says why."""


@dataclass(frozen=True)
class Report:
    agent_name: str
    tool: str
    release: Release
    production: Release
    labels: int
    bins: list[Bin]
    ece: float | None
    curve: list[CurvePoint]
    recommendation: Recommendation
    current_threshold: float | None
    alpha: float
    delta: float
    min_labels: int

    @property
    def stale(self) -> bool:
        """Computed on another release than production's: its evidence is of other calls."""
        return self.release.pk != self.production.pk


def calibration_report(
    *,
    agent_name: str,
    tool: str,
    release: Release | None = None,
    alpha: float = DEFAULTS["alpha"],
    delta: float = DEFAULTS["delta"],
    min_labels: int = int(DEFAULTS["min_labels"]),
) -> Report:
    production = release_production(agent_name=agent_name)
    release = release or production
    labels = labels_for(agent_name=agent_name, tool=tool, release=release.number).labels
    bins = reliability(labels)
    # The thresholds production runs with, as its runs see the version.
    thresholds = config_effective(version=production.config_version)["thresholds"]
    return Report(
        agent_name=agent_name,
        tool=tool,
        release=release,
        production=production,
        labels=len(labels),
        bins=bins,
        ece=expected_calibration_error(bins),
        curve=automation_curve(labels, delta=delta),
        recommendation=recommend(labels, alpha=alpha, delta=delta, min_labels=min_labels),
        current_threshold=thresholds.get(tool),
        alpha=alpha,
        delta=delta,
        min_labels=min_labels,
    )


def recommendation_apply(*, report: Report, user: User) -> AgentConfigVersion:
    """A new configuration version: production's, with the recommended threshold."""
    advice = report.recommendation
    if advice.threshold is None:
        raise RecommendationRefused(f"There is no recommendation to apply: {advice.reason}.")
    if report.stale:
        raise RecommendationRefused(
            f"The recommendation was computed on release {report.release.number}; production "
            f"runs release {report.production.number}. Compute it on production's calls."
        )
    # Every section as production's runs see it, so the new version differs in this one
    # threshold and nothing else (its diff on the activation page says so).
    config = copy.deepcopy(config_effective(version=report.production.config_version))
    thresholds = config["thresholds"]
    if thresholds.get(report.tool) == advice.threshold:
        raise RecommendationRefused(f"{report.tool}'s threshold is {advice.threshold} already.")
    thresholds[report.tool] = advice.threshold
    note = (
        f"Calibrated {report.tool} threshold {advice.threshold:.2f} (alpha {report.alpha:g}, "
        f"delta {report.delta:g}, {advice.above} labels above, release {report.release.number})"
    )
    return config_version_create(
        agent_name=report.agent_name, config=config, note=note[:500], user=user
    )
