from django.urls import path

from runs import views, views_graphs

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
]
