from django.urls import path

from calibration import views

app_name = "calibration"

urlpatterns = [
    path("<str:agent_name>/", views.calibration_page, name="report"),
    path("<str:agent_name>/apply", views.recommendation_apply_view, name="apply"),
]
