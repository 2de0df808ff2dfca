"""Settings for benchmarks: Gatehouse's own, plus empty views to compare against, quiet logs, no throttle."""

from gatehouse.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
DEBUG = False
ALLOWED_HOSTS = ["*"]
GATEHOUSE_AGENT_RATE = "100000000/min"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

import os  # noqa: E402

if os.environ.get("GATEHOUSE_BENCH_NO_THROTTLE"):  # to measure what the throttle costs
    REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}  # noqa: F405
