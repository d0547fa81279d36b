from django.contrib import admin
from django.urls import include, path

from agentdesk import views
from agentdesk.api import api_make
from releases.urls import agent_urls, prompt_urls, release_urls
from reviews import api as reviews_api
from runs import api as runs_api

api = api_make([runs_api.router, reviews_api.router])

token_urls = (
    [
        path("", views.token_list, name="list"),
        path("<int:token_id>/revoke", views.token_revoke, name="revoke"),
    ],
    "tokens",
)

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.AuditedLoginView.as_view(), name="login"),
    path("logout/", views.AuditedLogoutView.as_view(), name="logout"),
    path("runs/", include("runs.urls")),
    path("inbox/", include("reviews.urls")),
    path("audit/", include("audit.urls")),
    path("agents/", include(agent_urls)),
    path("prompts/", include(prompt_urls)),
    path("releases/", include(release_urls)),
    path("evals/", include("evals.urls")),
    path("calibration/", include("calibration.urls")),
    path("tokens/", include(token_urls)),
    # The JSON API (runs/api.py, reviews/api.py), its schema (api/schema) and docs (api/docs).
    path("api/", api.urls),
    # Before the admin's own: its "view on site" redirect answers 404 to a malformed id.
    path(
        "admin/r/<path:content_type_id>/<path:object_id>/",
        admin.site.admin_view(views.admin_view_on_site),
    ),
    path("admin/", admin.site.urls),
]

# 403 and 404 are Django's handlers with templates/403.html and 404.html.
handler400 = "agentdesk.error_pages.bad_request"
