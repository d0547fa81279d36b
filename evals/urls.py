from django.urls import path

from evals import views

app_name = "evals"

urlpatterns = [
    path("", views.agent_list, name="list"),
    path("<str:agent_name>/candidates/", views.candidate_queue, name="queue"),
    path(
        "<str:agent_name>/candidates/<int:candidate_id>/accept",
        views.candidate_accept,
        name="accept",
    ),
    path("<str:agent_name>/candidates/<int:candidate_id>/edit", views.candidate_edit, name="edit"),
    path(
        "<str:agent_name>/candidates/<int:candidate_id>/discard",
        views.candidate_discard,
        name="discard",
    ),
    path("<str:agent_name>/datasets/", views.dataset_list, name="datasets"),
    path("<str:agent_name>/datasets/new", views.dataset_new, name="dataset-new"),
    path("<str:agent_name>/datasets/<slug:name>/", views.dataset_detail, name="dataset"),
    path(
        "<str:agent_name>/datasets/<slug:name>/versions/<int:number>/",
        views.dataset_version,
        name="version",
    ),
    path(
        "<str:agent_name>/datasets/<slug:name>/versions/<int:number>/export",
        views.dataset_export,
        name="export",
    ),
    path("<str:agent_name>/datasets/<slug:name>/remove", views.dataset_remove, name="remove"),
    path("<str:agent_name>/datasets/<slug:name>/gate", views.dataset_gate, name="gate"),
    path("<str:agent_name>/datasets/<slug:name>/examples/new", views.example_new, name="example"),
    path("<str:agent_name>/datasets/<slug:name>/import", views.dataset_import, name="import"),
    path(
        "<str:agent_name>/datasets/<slug:name>/from-run/<uuid:run_id>",
        views.example_from_run,
        name="from-run",
    ),
    path("<str:agent_name>/from-run/<uuid:run_id>", views.run_datasets, name="run-datasets"),
    path("<str:agent_name>/evals/", views.eval_list, name="evals"),
    path("<str:agent_name>/judge/", views.judge_versions, name="judge"),
    path("<str:agent_name>/judge/new", views.judge_new, name="judge-new"),
    path("<str:agent_name>/evals/new", views.eval_new, name="eval-new"),
    path("<str:agent_name>/evals/<int:eval_id>/", views.eval_detail, name="eval"),
    path(
        "<str:agent_name>/evals/<int:eval_id>/against/<int:baseline_id>/",
        views.eval_compare,
        name="compare",
    ),
    path(
        "<str:agent_name>/evals/<int:eval_id>/against/<int:baseline_id>/<int:index>/",
        views.eval_example_diff,
        name="example-diff",
    ),
]
