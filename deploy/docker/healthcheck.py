#!/usr/bin/env python3
"""Container health check for lambda-microservice (no curl in the image).

Exit 0 while the HTTP server answers on BIND_ADDR's port, whatever /health
says: a 503 (database unreachable) is printed but is not a reason to
restart the container. Exit 1 when nothing answers.
"""
import json
import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("BIND_ADDR", "0.0.0.0:8080").rsplit(":", 1)[-1]
url = f"http://127.0.0.1:{port}/health"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        body = response.read(4096).decode("utf-8", "replace")
        print(f"{response.status} {body}")
    sys.exit(0)
except urllib.error.HTTPError as error:
    body = error.read(4096).decode("utf-8", "replace")
    try:
        status = json.loads(body).get("status", "?")
    except ValueError:
        status = "?"
    print(f"{error.code} (degraded: {status}) {body}")
    sys.exit(0 if error.code < 500 or error.code == 503 else 1)
except Exception as error:  # connection refused, timeout, ...
    print(f"no answer from {url}: {error}")
    sys.exit(1)
