"""WSGI entry point: `djangoproj.wsgi:application`, validated."""

import os
from wsgiref.validate import validator

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproj.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = validator(get_wsgi_application())
