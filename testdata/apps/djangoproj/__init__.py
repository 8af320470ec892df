"""A minimal Django project for gowsgi's integration tests:
`--chdir testdata/apps djangoproj.wsgi:application`."""
