"""Golden datasets: an agent's eval examples, as numbered, immutable versions.

A dataset is a name per agent; its content lives in ``DatasetVersion`` rows, each the
whole list of examples (``evals.examples`` says what one holds). Any change (an example
added, edited, removed, an import) makes the next version; a version is never changed,
so an eval can record the exact one it ran on.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Dataset(models.Model):
    agent_name = models.CharField(max_length=64)
    name = models.SlugField(max_length=64)
    description = models.CharField(max_length=500, blank=True)
    # The agent's gating dataset (at most one): a release goes to production only with a
    # passing eval on its latest version (evals.gate). ``gate``: the floors per metric
    # ({"floors": {"tool_selection": 0.9}}) and the regression allowance in points
    # ({"allowance_points": 2}); missing keys take the defaults of evals.gate.
    gating = models.BooleanField(default=False)
    gate = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent_name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["agent_name", "name"], name="dataset_unique_name"),
            models.UniqueConstraint(
                fields=["agent_name"],
                condition=models.Q(gating=True),
                name="dataset_one_gating_per_agent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name}/{self.name}"


class DatasetVersion(models.Model):
    """One immutable version of a dataset: every example it holds, in order.

    ``content_hash`` is the SHA-256 of the canonical examples: a change that changes
    nothing makes no version.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    examples = models.JSONField()
    content_hash = models.CharField(max_length=64)
    note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "number"], name="dataset_version_unique_number"
            ),
            models.CheckConstraint(
                condition=models.Q(number__gte=1), name="dataset_version_number_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset}@{self.number}"


class JudgePrompt(models.Model):
    """One immutable version of an agent's judge: the prompt and the model that grade answers.

    Versioned like the agent's own prompts (releases.versioning): number 1 is the code's
    (evals.judge), and an eval records the version it was graded by. The judge has a model
    route of its own, so grading does not share (or starve) the agent's tier.
    """

    agent_name = models.CharField(max_length=64)
    number = models.PositiveIntegerField()
    template = models.TextField()
    model = models.CharField(max_length=100)
    endpoint = models.CharField(max_length=64, default="default")
    content_hash = models.CharField(max_length=64)
    note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent_name", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent_name", "number"], name="judge_prompt_unique_number"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} judge v{self.number}"


class EvalState(models.TextChoices):
    RUNNING = "running"  # examples are being run; ``done`` of ``total`` have a result
    FINISHED = "finished"  # every example has a result (an example's error is a result)


class Eval(models.Model):
    """One run of a release over one dataset version, and its aggregated scores.

    Every example gets an ``EvalResult``; the eval finishes when the last one is in,
    whichever worker records it. ``metrics``: the aggregates (evals.scoring), written
    then, so a page or a gate reads one row.
    """

    agent_name = models.CharField(max_length=64)
    release = models.ForeignKey("releases.Release", on_delete=models.PROTECT, related_name="evals")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="evals"
    )
    judge = models.ForeignKey(JudgePrompt, on_delete=models.PROTECT, related_name="evals")
    state = models.CharField(max_length=12, choices=EvalState.choices, default=EvalState.RUNNING)
    total = models.PositiveIntegerField()
    done = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("run_eval", "Can run an eval of a release")]
        indexes = [
            models.Index(
                fields=["release", "dataset_version", "-created_at"], name="eval_release_dataset"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(done__lte=models.F("total")), name="eval_done_le_total"
            ),
        ]

    def __str__(self) -> str:
        return f"eval {self.pk} of {self.agent_name} release {self.release_id}"

    @property
    def progress_percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


class ResultStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"  # a task example's sandboxed run is under way
    SCORED = "scored"
    ERROR = "error"  # the example could not be run (recorded, never stops the eval)


class EvalResult(models.Model):
    """One example of an eval: what the release did with it, and its scores.

    ``index`` is the example's position in the dataset version (its ``example_id`` is
    kept too, to pair the same example across evals). ``scores``: the metric names of
    evals.scoring, each 0..1 or null when it does not apply. ``calls``: the calls the
    release proposed (name, arguments, policy outcome); ``answer``: its final text.
    """

    eval = models.ForeignKey(Eval, on_delete=models.CASCADE, related_name="results")
    index = models.PositiveIntegerField()
    example_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=8)
    status = models.CharField(
        max_length=8, choices=ResultStatus.choices, default=ResultStatus.PENDING
    )
    run = models.OneToOneField(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="eval_result"
    )
    scores = models.JSONField(default=dict)
    calls = models.JSONField(default=list)
    answer = models.TextField(blank=True)
    judge = models.JSONField(default=dict)
    error = models.JSONField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    steps = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["eval", "index"]
        constraints = [
            models.UniqueConstraint(fields=["eval", "index"], name="eval_result_unique_index"),
        ]

    def __str__(self) -> str:
        return f"{self.eval_id}[{self.index}] {self.example_id}"
