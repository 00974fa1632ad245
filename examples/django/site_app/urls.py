from django.http import HttpResponse
from django.templatetags.static import static
from django.urls import path


def index(request):
    return HttpResponse(f"hello from django; the stylesheet is at {static('site.css')}\n", content_type="text/plain")


urlpatterns = [path("", index)]
