from django.urls import path

from policies import views, views_lanes

urlpatterns = [
    path("breakers/", views.breaker_list, name="console-breaker-list"),
    path("breakers/<int:breaker_id>/close/", views.breaker_close, name="console-breaker-close"),
    path("switches/<int:switch_id>/lift/", views.lift_switch, name="console-switch-lift"),
    path("lanes/", views_lanes.lane_list, name="console-lane-list"),
    path("lanes/<int:policy_id>/<str:tool>/", views_lanes.lane_detail, name="console-lane-detail"),
    path(
        "lanes/proposals/<int:proposal_id>/accept/",
        views_lanes.lane_accept,
        name="console-lane-accept",
    ),
    path(
        "lanes/proposals/<int:proposal_id>/dismiss/",
        views_lanes.lane_dismiss,
        name="console-lane-dismiss",
    ),
]
