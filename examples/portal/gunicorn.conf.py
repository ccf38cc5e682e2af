"""gunicorn settings for the portal; command-line flags (e.g. --bind) take precedence.

gunicorn reads ./gunicorn.conf.py from the directory it starts in (as in the Docker image);
from elsewhere pass it explicitly: ``-c examples/portal/gunicorn.conf.py`` (--chdir is not enough).
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT') or '5000'}"
workers = int(os.environ.get("WEB_CONCURRENCY") or "2")
graceful_timeout = 10
# /wait may hold a sync worker for up to 60 s; the default 30 s timeout would kill it mid-request.
timeout = 75
accesslog = "-"
# Replicas on one host would all claim the same default control socket path; the portal needs none.
control_socket_disable = True
