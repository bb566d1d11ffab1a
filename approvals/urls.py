from django.urls import path

from approvals import views

urlpatterns = [
    path("", views.review_queue, name="console-review-queue"),
    path("sample/", views.sample_list, name="console-sample-list"),
]
