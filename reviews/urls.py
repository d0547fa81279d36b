from django.urls import path

from reviews import views

app_name = "reviews"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("requests/<int:request_id>/", views.request_detail, name="detail"),
    path("requests/<int:request_id>/claim", views.request_claim, name="claim"),
    path("requests/<int:request_id>/approve", views.request_approve, name="approve"),
    path("requests/<int:request_id>/edit", views.request_edit, name="edit"),
    path("requests/<int:request_id>/reject", views.request_reject, name="reject"),
    path("requests/<int:request_id>/escalate", views.request_escalate, name="escalate"),
    path("bulk-approve", views.bulk_approve, name="bulk-approve"),
    path("candidates/", views.candidate_list, name="candidates"),
    path("queues/", views.queue_list, name="queues"),
    path("queues/<int:queue_id>/members", views.queue_members, name="members"),
]
