from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from config.api import api

admin.site.site_header = "Bosun"
admin.site.site_title = "Bosun"
admin.site.index_title = "Operations console"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", api.urls),
    path("console/review/", include("approvals.urls")),
    path("console/", include("policies.urls")),
    path("console/", include("runs.urls")),
    path("console/", include("knowledge.urls")),
    path("console/", include("evals.urls")),
    path("", RedirectView.as_view(url="/console/", permanent=False)),
]
