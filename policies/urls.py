from django.urls import path

from policies import views

urlpatterns = [
    path("<int:switch_id>/lift/", views.lift_switch, name="console-switch-lift"),
]
