"""Settings for the test project: no database, no sessions, DEBUG off."""

import tempfile

SECRET_KEY = "gowsgi-tests-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoproj.urls"
INSTALLED_APPS = []
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES = {}
USE_TZ = True
APPEND_SLASH = False
# Uploads above this size go to temporary files: tests cover both paths.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1 << 20
FILE_UPLOAD_TEMP_DIR = tempfile.gettempdir()
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 << 20
LOGGING_CONFIG = None
STATIC_URL = "/static/"
