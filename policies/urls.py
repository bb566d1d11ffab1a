from django.urls import path

from policies import views

urlpatterns = [
    path("", views.breaker_list, name="console-breaker-list"),
    path("<int:breaker_id>/close/", views.breaker_close, name="console-breaker-close"),
]
