from django.urls import path

from evals import views

urlpatterns = [
    path("experiments/", views.experiment_list, name="console-experiment-list"),
    path(
        "experiments/<int:experiment_id>/",
        views.experiment_detail,
        name="console-experiment-detail",
    ),
    path(
        "experiments/<int:experiment_id>/cancel/",
        views.experiment_cancel,
        name="console-experiment-cancel",
    ),
    path(
        "experiments/<int:experiment_id>/resume/",
        views.experiment_resume,
        name="console-experiment-resume",
    ),
    path("shadows/", views.shadow_list, name="console-shadow-list"),
    path("shadows/<int:rollout_id>/", views.shadow_detail, name="console-shadow-detail"),
]
