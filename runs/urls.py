from django.urls import path

from runs import views, views_search, views_workflows

urlpatterns = [
    path("", views.home, name="console-home"),
    path("dashboard/", views.dashboard, name="console-dashboard"),
    path("runs/", views.run_list, name="console-run-list"),
    path("runs/<int:run_id>/", views.run_detail, name="console-run-detail"),
    path("runs/<int:run_id>/retry/", views.run_retry, name="console-run-retry"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="console-run-cancel"),
    path("dead-letters/", views.deadletter_list, name="console-deadletter-list"),
    path("dead-letters/retry/", views.deadletter_retry, name="console-deadletter-retry"),
    path("search/", views_search.run_search, name="console-run-search"),
    path("workflows/", views_workflows.workflow_list, name="console-workflow-list"),
    path("workflows/<slug:slug>/", views_workflows.workflow_detail, name="console-workflow-detail"),
    path(
        "workflows/<slug:slug>/start/",
        views_workflows.workflow_start,
        name="console-workflow-start",
    ),
    path(
        "workflows/<slug:slug>/publish/",
        views_workflows.workflow_publish,
        name="console-workflow-publish",
    ),
]
