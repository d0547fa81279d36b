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
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent_name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["agent_name", "name"], name="dataset_unique_name"),
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
