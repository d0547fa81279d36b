from django.urls import path

from runs import views

app_name = "runs"

urlpatterns = [
    path("", views.run_list, name="list"),
    path("new/", views.run_new, name="new"),
    path("<uuid:run_id>/", views.run_detail, name="detail"),
    path("breakers/", views.breaker_list, name="breakers"),
    path("dead-letters/", views.dead_letter_list, name="dead-letters"),
    path("dead-letters/<int:letter_id>/", views.dead_letter_detail, name="dead-letter"),
    path(
        "dead-letters/<int:letter_id>/<str:action>/",
        views.dead_letter_resolve,
        name="dead-letter-resolve",
    ),
]
