"""Run an eval of a release, and gate a build on one: ``eval run`` and ``eval gate``.

    python manage.py eval run --agent support --release staging --dataset gating \\
        [--baseline production] [--inline]
    python manage.py eval gate --agent support --release staging --dataset gating \\
        --baseline production [--floor tool_selection=0.9] [--allowance 2] \\
        [--report gate.xml | gate.json]

``run`` starts the eval (its examples run on the Celery workers), waits for it and prints
its metrics; with ``--inline`` it runs every example in this process instead, one after
another, for a CI job without workers; with ``--baseline``, the baseline release's latest
finished eval on the same dataset version (or a new one) and the comparison. ``gate``
reads the latest finished eval and exits 0 when it passes, 1 when it fails, 2 when there
is nothing to gate (no eval, bad arguments); docs/evals.md has the CI recipe.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evals.comparison import evals_compare
from evals.gate import GateReport, GateRules, gate_report
from evals.models import DatasetVersion, Eval, EvalState
from evals.runner import EvalRefused, eval_run_inline, eval_start
from evals.scoring import QUALITY_METRICS
from evals.selectors import NotFound, dataset_version_named, evals_of_release, release_named
from releases.models import Release

USAGE_ERROR = 2


class Command(BaseCommand):
    help = "Run an eval of a release over a golden dataset (run), or gate on one (gate)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        run = sub.add_parser("run", help="run an eval and wait for it")
        gate = sub.add_parser("gate", help="exit non-zero when the latest eval fails its gate")
        for each in (run, gate):
            each.add_argument("--agent", required=True)
            each.add_argument("--release", required=True, help="a release number or a label")
            each.add_argument("--dataset", required=True, help="name or name@version")
            each.add_argument("--baseline", help="a release number or a label to compare with")
        run.add_argument("--no-wait", action="store_true", help="start it and print its id")
        run.add_argument(
            "--inline",
            action="store_true",
            help="run the examples in this process, without workers (slower, same results)",
        )
        run.add_argument("--timeout", type=float, default=1800, help="seconds to wait")
        gate.add_argument(
            "--floor", action="append", default=[], metavar="METRIC=VALUE", help="repeatable"
        )
        gate.add_argument("--allowance", type=float, help="points a metric may fall (default 2)")
        gate.add_argument("--report", type=Path, help="write a JUnit XML (.xml) or JSON report")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            release = release_named(agent_name=options["agent"], name=options["release"])
            version = dataset_version_named(agent_name=options["agent"], name=options["dataset"])
            baseline = (
                release_named(agent_name=options["agent"], name=options["baseline"])
                if options["baseline"]
                else None
            )
        except NotFound as exc:
            raise CommandError(str(exc), returncode=USAGE_ERROR) from None
        if options["action"] == "run":
            self._run(release, version, baseline, options)
        else:
            self._gate(release, version, baseline, options)

    # --- run ------------------------------------------------------------------------------

    def _run(
        self,
        release: Release,
        version: DatasetVersion,
        baseline: Release | None,
        options: dict[str, Any],
    ) -> None:
        inline = options["inline"]
        if inline and options["no_wait"]:
            raise CommandError(
                "--inline runs the eval here: it cannot be --no-wait", returncode=USAGE_ERROR
            )
        started: list[Eval] = []  # the evals this command starts, and so runs when inline
        try:
            candidate = eval_start(
                release=release, dataset_version=version, user=None, queue=not inline
            )
            started.append(candidate)
            base_eval = None
            if baseline is not None:
                base_eval = evals_of_release(release=baseline, dataset_version=version).first()
                if base_eval is None:
                    base_eval = eval_start(
                        release=baseline, dataset_version=version, user=None, queue=not inline
                    )
                    started.append(base_eval)
        except EvalRefused as exc:
            raise CommandError(str(exc), returncode=USAGE_ERROR) from None
        self.stdout.write(
            f"eval {candidate.pk}: release {release.number} on {version.dataset}@"
            f"{version.number}, {candidate.total} examples"
        )
        if options["no_wait"]:
            return
        if inline:
            for evaluation in started:
                self.stdout.write(f"  eval {evaluation.pk}: running {evaluation.total} inline")
                if eval_run_inline(evaluation=evaluation).state != EvalState.FINISHED:
                    raise CommandError(
                        f"eval {evaluation.pk} did not finish inline "
                        f"({evaluation.done}/{evaluation.total} examples recorded)"
                    )
        else:
            waited = [candidate] + ([base_eval] if base_eval is not None else [])
            for evaluation in waited:
                self._wait(evaluation, options["timeout"])
        candidate.refresh_from_db()
        self._metrics(candidate)
        if base_eval is not None:
            base_eval.refresh_from_db()
            self._comparison(base_eval, candidate)

    def _wait(self, evaluation: Eval, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        shown = -1
        while True:
            evaluation.refresh_from_db(fields=["done", "total", "state"])
            if evaluation.done != shown:
                shown = evaluation.done
                self.stdout.write(f"  eval {evaluation.pk}: {shown}/{evaluation.total}")
            if evaluation.state == EvalState.FINISHED:
                return
            if time.monotonic() > deadline:
                raise CommandError(
                    f"eval {evaluation.pk} did not finish within {timeout:g} s "
                    "(are the Celery workers running?)"
                )
            time.sleep(0.5)

    def _metrics(self, evaluation: Eval) -> None:
        metrics = evaluation.metrics
        self.stdout.write(
            f"eval {evaluation.pk}: {metrics['examples']} examples, {metrics['errors']} errors, "
            f"cost ${evaluation.cost_usd}"
        )
        for name in QUALITY_METRICS:
            if name in metrics["metrics"]:
                row = metrics["metrics"][name]
                self.stdout.write(f"  {name:<18} {row['mean']:.3f}  (n={row['n']})")

    def _comparison(self, baseline: Eval, candidate: Eval) -> None:
        comparison = evals_compare(baseline=baseline, candidate=candidate)
        self.stdout.write(f"against eval {baseline.pk} (release {baseline.release.number}):")
        for delta in comparison.deltas:
            interval = (
                f"[{delta.low * 100:+.1f}, {delta.high * 100:+.1f}]"
                if delta.low is not None and delta.high is not None
                else "[n/a]"
            )
            self.stdout.write(
                f"  {delta.metric:<18} {delta.baseline:.3f} -> {delta.candidate:.3f}  "
                f"{delta.delta_points:+.1f} pts {interval}"
            )
        self.stdout.write(
            f"  {len(comparison.regressed)} regressed, {len(comparison.improved)} improved"
        )

    # --- gate -----------------------------------------------------------------------------

    def _gate(
        self,
        release: Release,
        version: DatasetVersion,
        baseline: Release | None,
        options: dict[str, Any],
    ) -> None:
        candidate = evals_of_release(release=release, dataset_version=version).first()
        if candidate is None:
            raise CommandError(
                f"release {release.number} has no finished eval on {version.dataset}@"
                f"{version.number}; run: python manage.py eval run --agent {release.agent_name} "
                f"--release {release.number} --dataset {version.dataset.name}",
                returncode=USAGE_ERROR,
            )
        base_eval = None
        if baseline is not None and baseline.pk != release.pk:
            base_eval = evals_of_release(release=baseline, dataset_version=version).first()
            if base_eval is None:
                raise CommandError(
                    f"the baseline release {baseline.number} has no finished eval on "
                    f"{version.dataset}@{version.number}",
                    returncode=USAGE_ERROR,
                )
        try:
            rules = GateRules.of(
                version.dataset,
                floors=dict(_floor(text) for text in options["floor"]),
                allowance_points=options["allowance"],
            )
        except ValueError as exc:
            raise CommandError(str(exc), returncode=USAGE_ERROR) from None
        report = gate_report(candidate, baseline=base_eval, rules=rules)
        self._table(report)
        if options["report"] is not None:
            _write_report(report, options["report"])
            self.stdout.write(f"report written to {options['report']}")
        if not report.passed:
            raise CommandError(report.summary(), returncode=1)

    def _table(self, report: GateReport) -> None:
        self.stdout.write(
            f"{'metric':<18} {'value':>6} {'floor':>6} {'base':>6} {'Δ pts':>7}  status"
        )
        for row in report.rows:
            self.stdout.write(
                f"{row.metric:<18} {row.value:>6.3f} {_num(row.floor):>6} {_num(row.baseline):>6} "
                f"{_pts(row.delta_points):>7}  {row.status}"
            )
        self.stdout.write(("PASS " if report.passed else "FAIL ") + report.summary())


def _floor(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise ValueError(f"--floor {text!r}: write METRIC=VALUE, e.g. tool_selection=0.9") from None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pts(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def _write_report(report: GateReport, path: Path) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
        return
    failing = sum(row.status != "ok" for row in report.rows) + (not report.passed)
    suite = ET.Element(
        "testsuite",
        name="agentdesk eval gate",
        tests=str(len(report.rows) + 1),
        failures=str(failing),
    )
    for row in report.rows:
        case = ET.SubElement(suite, "testcase", classname=f"eval.{report.eval.pk}", name=row.metric)
        if row.status != "ok":
            failure = ET.SubElement(case, "failure", message=row.status)
            failure.text = json.dumps(row.as_json())
    overall = ET.SubElement(suite, "testcase", classname=f"eval.{report.eval.pk}", name="gate")
    if not report.passed:
        ET.SubElement(overall, "failure", message=report.summary())
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
