from django.urls import path

from approvals import views, views_bulk

urlpatterns = [
    path("", views.review_queue, name="console-review-queue"),
    path("count/", views.review_count, name="console-review-count"),
    path("focus/", views.review_focus, name="console-review-focus"),
    path("bulk/", views_bulk.review_bulk, name="console-review-bulk"),
    path("bulk/decide/", views_bulk.review_bulk_decide, name="console-review-bulk-decide"),
    path("<int:approval_id>/skip/", views.review_skip, name="console-review-skip"),
    path("<int:approval_id>/", views.review_detail, name="console-review-detail"),
    path("<int:approval_id>/decide/", views.review_decide, name="console-review-decide"),
    path("sample/", views.sample_list, name="console-sample-list"),
    path("sample/draw/", views.sample_draw, name="console-sample-draw"),
    path("sample/<int:review_id>/", views.sample_detail, name="console-sample-detail"),
    path("sample/<int:review_id>/replay/", views.sample_replay, name="console-sample-replay"),
    path(
        "sample/items/<int:item_id>/",
        views.sample_item_review,
        name="console-sampleitem-review",
    ),
]
