from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "Bosun"
admin.site.site_title = "Bosun"
admin.site.index_title = "Operations console"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
