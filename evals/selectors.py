"""Finding what an eval names: a release by number or label, a dataset by name[@version]."""

from __future__ import annotations

from django.db.models import QuerySet

from evals.models import Dataset, DatasetVersion, Eval, EvalState
from releases.models import LabelName, Release
from releases.services import release_get, release_labels


class NotFound(LookupError):
    """What was named does not exist; the message says what, for a person."""


def release_named(*, agent_name: str, name: str) -> Release:
    """Release ``name`` of the agent: its number ("7") or a label ("staging")."""
    text = name.strip()
    labels = release_labels(agent_name=agent_name)  # release 1 exists from the first use
    if text in LabelName.values:
        return labels[LabelName(text)]
    if not text.isdigit():
        names = ", ".join(LabelName.values)
        raise NotFound(f"{name!r} is neither a release number nor a label ({names})")
    release = release_get(agent_name=agent_name, number=int(text)) if len(text) < 10 else None
    if release is None:
        raise NotFound(f"{agent_name} has no release {text}")
    return release


def dataset_version_named(*, agent_name: str, name: str) -> DatasetVersion:
    """``name`` or ``name@version`` of the agent's datasets; the latest version by default."""
    base, _, number = name.partition("@")
    dataset = Dataset.objects.filter(agent_name=agent_name, name=base.strip()).first()
    if dataset is None:
        raise NotFound(f"{agent_name} has no dataset {base.strip()!r}")
    versions = dataset.versions.select_related("dataset")
    if not number:
        latest = versions.order_by("-number").first()
        if latest is None:
            raise NotFound(f"the dataset {dataset} has no version")
        return latest
    if not number.isdigit():
        raise NotFound(f"{number!r} is not a version number")
    version = versions.filter(number=int(number)).first() if len(number) < 10 else None
    if version is None:
        raise NotFound(f"the dataset {dataset} has no version {number}")
    return version


def evals_of_release(*, release: Release, dataset_version: DatasetVersion) -> QuerySet[Eval]:
    return Eval.objects.filter(
        release=release, dataset_version=dataset_version, state=EvalState.FINISHED
    ).order_by("-finished_at")


def eval_get(*, eval_id: int) -> Eval | None:
    return (
        Eval.objects.select_related(
            "release__prompt_version",
            "release__config_version",
            "dataset_version__dataset",
            "judge",
        )
        .filter(pk=eval_id)
        .first()
    )
