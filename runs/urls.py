from django.urls import path

from runs import views, views_graphs, views_rollout, views_search, views_workflows

urlpatterns = [
    path("", views.home, name="console-home"),
    path("dashboard/", views.dashboard, name="console-dashboard"),
    path("runs/", views.run_list, name="console-run-list"),
    path("runs/<int:run_id>/", views.run_detail, name="console-run-detail"),
    path("runs/<int:run_id>/retry/", views.run_retry, name="console-run-retry"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="console-run-cancel"),
    path(
        "workflows/<slug:slug>/versions/",
        views_graphs.version_list,
        name="console-version-list",
    ),
    path(
        "workflows/<slug:slug>/versions/<int:number>/",
        views_graphs.version_detail,
        name="console-version-detail",
    ),
    path("workflows/<slug:slug>/diff/", views_graphs.version_diff, name="console-version-diff"),
    path("dead-letters/", views.deadletter_list, name="console-deadletter-list"),
    path("dead-letters/retry/", views.deadletter_retry, name="console-deadletter-retry"),
    path("rollouts/", views_rollout.rollout_list, name="console-rollout-list"),
    path("rollouts/<slug:slug>/", views_rollout.rollout_detail, name="console-rollout-detail"),
    path(
        "rollouts/<slug:slug>/publish/",
        views_rollout.rollout_publish,
        name="console-rollout-publish",
    ),
    path("rollouts/<slug:slug>/start/", views_rollout.rollout_start, name="console-rollout-start"),
    path(
        "rollout/<int:rollout_id>/promote/",
        views_rollout.rollout_promote,
        name="console-rollout-promote",
    ),
    path(
        "rollout/<int:rollout_id>/rollback/",
        views_rollout.rollout_rollback,
        name="console-rollout-rollback",
    ),
    path(
        "rollout/<int:rollout_id>/comparison/",
        views_rollout.rollout_comparison_view,
        name="console-rollout-comparison",
    ),
    path(
        "dashboard/canaries/",
        views_rollout.dashboard_canaries,
        name="console-dashboard-canaries",
    ),
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
