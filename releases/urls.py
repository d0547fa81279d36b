from django.urls import path

from releases import views

agent_urls = (
    [
        path("", views.agent_list, name="list"),
        path("<str:agent_name>/", views.agent_detail, name="detail"),
        path("<str:agent_name>/new", views.agent_version_new, name="new"),
        path("<str:agent_name>/versions/<int:number>/", views.agent_version, name="version"),
        path(
            "<str:agent_name>/versions/<int:number>/activate",
            views.agent_version_activate,
            name="activate",
        ),
    ],
    "agents",
)

prompt_urls = (
    [
        path("", views.prompt_list, name="list"),
        path("<str:agent_name>/", views.prompt_detail, name="detail"),
        path("<str:agent_name>/new", views.prompt_version_new, name="new"),
        path("<str:agent_name>/versions/<int:number>/", views.prompt_version, name="version"),
        path("<str:agent_name>/try", views.prompt_try, name="try"),
    ],
    "prompts",
)

release_urls = (
    [
        path("", views.release_list, name="list"),
        path("<str:agent_name>/", views.release_detail, name="detail"),
        path("<str:agent_name>/new", views.release_new, name="new"),
        path("<str:agent_name>/move", views.release_move, name="move"),
        path("<str:agent_name>/<int:number>/", views.release_view, name="release"),
    ],
    "releases",
)
