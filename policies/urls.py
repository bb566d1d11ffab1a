from django.urls import path

from policies import views

urlpatterns = [
    path("breakers/", views.breaker_list, name="console-breaker-list"),
    path("breakers/<int:breaker_id>/close/", views.breaker_close, name="console-breaker-close"),
    path("switches/<int:switch_id>/lift/", views.lift_switch, name="console-switch-lift"),
]
