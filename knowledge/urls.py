from django.urls import path

from knowledge import views

urlpatterns = [
    path("entities/<int:entity_id>/", views.entity_detail, name="console-entity-detail"),
]
