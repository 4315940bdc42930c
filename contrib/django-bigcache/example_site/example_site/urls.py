from django.urls import path

from datasets import views

urlpatterns = [
    path("dataset/<int:pk>/", views.dataset, name="dataset"),
    path("datasets/", views.dataset_list, name="dataset-list"),
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
