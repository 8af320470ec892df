import hashlib

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt


def json_view(request):
    return JsonResponse({"framework": "django", "ok": True, "query": request.GET.dict()})


@csrf_exempt
def form_view(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    return JsonResponse({"fields": request.POST.dict()})


@csrf_exempt
def upload_view(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    files = {}
    for name, f in request.FILES.items():
        h = hashlib.sha256()
        size = 0
        for chunk in f.chunks():
            h.update(chunk)
            size += len(chunk)
        files[name] = {"filename": f.name, "size": size, "sha256": h.hexdigest()}
    return JsonResponse({"fields": request.POST.dict(), "files": files})
