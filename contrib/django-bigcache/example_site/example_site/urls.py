from django.contrib.sitemaps.views import sitemap
from django.urls import include, path

from datasets import views
from datasets.sitemaps import DatasetSitemap

urlpatterns = [
    # What `bigcache warm http://127.0.0.1:8000/sitemap.xml` reads.
    path("sitemap.xml", sitemap, {"sitemaps": {"datasets": DatasetSitemap}}, name="sitemap"),
    path("dataset/<int:pk>/", views.dataset, name="dataset"),
    path("datasets/", views.dataset_list, name="dataset-list"),
    # The dataset page for logged-in visitors too: a shell and fragments.
    path("esi/dataset/<int:pk>/", views.dataset_esi),
    path("_fragments/", include("django_bigcache.urls")),
    path("about/", views.about),
    path("async-dataset/<int:pk>/", views.async_dataset),
    path("cookie/", views.cookie_page),
    path("me/", views.me),
    path("form/", views.form, name="form"),
    path("form-marked/", views.form_marked),
    path("django-cached/", views.django_cached),
    path("test-login/<str:username>/", views.test_login),
    path("_renders/", views.renders),
    path("_seen/", views.seen),
]
