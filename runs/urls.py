from django.urls import path

from runs import views

urlpatterns = [
    path("", views.home, name="console-home"),
    path("dashboard/", views.dashboard, name="console-dashboard"),
    path("runs/", views.run_list, name="console-run-list"),
    path("runs/<int:run_id>/", views.run_detail, name="console-run-detail"),
    path("dead-letters/", views.deadletter_list, name="console-deadletter-list"),
]
