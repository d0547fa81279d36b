"""``manage.py calibration report``: how well an agent's stated confidence predicts what
its reviewers decide, and the threshold the evidence supports.

    python manage.py calibration report --agent support --tool issue_refund \\
        [--release 3] [--alpha 0.02] [--delta 0.05] [--min-labels 100] [--json]
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.registry import UnknownAgent, agent_get
from calibration.data import labels_for
from calibration.stats import automation_curve, expected_calibration_error, recommend, reliability

CURVE_SHOWN = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)


class Command(BaseCommand):
    help = "Calibration of an agent's stated confidence against its reviewers' decisions."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        report = sub.add_parser("report", help="reliability, ECE, the curve, a recommendation")
        report.add_argument("--agent", required=True)
        report.add_argument("--tool")
        report.add_argument("--release", type=int)
        report.add_argument("--alpha", type=float, default=0.02, help="target disagreement")
        report.add_argument("--delta", type=float, default=0.05, help="1 - confidence")
        report.add_argument("--min-labels", type=int, default=100)
        report.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            agent = agent_get(options["agent"])
        except UnknownAgent as exc:
            raise CommandError(str(exc)) from None
        if options["tool"] and agent.tool(options["tool"]) is None:
            raise CommandError(f"{agent.name} has no tool {options['tool']!r}")
        if not 0 < options["alpha"] < 1 or not 0 < options["delta"] < 0.5:
            raise CommandError("alpha is between 0 and 1, delta between 0 and 0.5")
        found = labels_for(agent_name=agent.name, tool=options["tool"], release=options["release"])
        bins = reliability(found.labels)
        curve = automation_curve(found.labels, delta=options["delta"], thresholds=CURVE_SHOWN)
        advice = recommend(
            found.labels,
            alpha=options["alpha"],
            delta=options["delta"],
            min_labels=options["min_labels"],
        )
        ece = expected_calibration_error(bins)
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "agent": agent.name,
                        "tool": options["tool"],
                        "release": options["release"],
                        "labels": len(found.labels),
                        "ece": ece,
                        "reliability": [asdict(b) for b in bins],
                        "curve": [asdict(p) for p in curve],
                        "recommendation": asdict(advice),
                    }
                )
            )
            return
        scope = f"{agent.name}" + (f" / {options['tool']}" if options["tool"] else "")
        self.stdout.write(f"{scope}: {len(found.labels)} labelled calls")
        self.stdout.write("confidence     calls  stated  agreed")
        for b in bins:
            if b.count:
                self.stdout.write(
                    f"{b.low:.1f}-{b.high:.1f}    {b.count:>6}  {b.mean_confidence:.3f}   "
                    f"{b.agreement:.3f}"
                )
        self.stdout.write(f"expected calibration error: {'-' if ece is None else f'{ece:.3f}'}")
        self.stdout.write("threshold  unreviewed  labelled  disagreed  upper bound")
        for p in curve:
            self.stdout.write(
                f"{p.threshold:>9.2f}  {p.unreviewed_share:>10.1%}  {p.above:>8}  "
                f"{p.disagreed:>9}  {p.bound:.3f}"
            )
        if advice.threshold is None:
            self.stdout.write(f"no recommendation: {advice.reason}")
        else:
            self.stdout.write(f"recommended threshold {advice.threshold:.2f}: {advice.reason}")
