"""Benchmark phase run in its own process: the full worker until `--expect` events are in ClickHouse.

Prints one JSON line: seconds from the first raw record ingested to the last event row written,
events/s, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import time

from portal_pulse.kafka_admin import ensure_topics
from portal_pulse.settings import Settings
from portal_pulse.worker import with_web_port
from streams.app import build_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--bootstrap", required=True)
    args = parser.parse_args()
    settings = with_web_port(Settings())  # PORTAL_PULSE_WEB_PORT: 0 a free port, -1 no endpoint
    ensure_topics(settings, args.bootstrap)
    app, rt = build_app(settings, args.bootstrap)
    result: dict[str, float] = {}

    @app.timer(0.05)
    async def watch() -> None:
        sink = rt.sinks["events"]
        if sink.rows_written >= args.expect and "end" not in result:
            result["end"] = time.monotonic()
            ingest = rt.ingest
            start = (ingest.feed.first_activity if ingest else None) or result["end"]
            seconds = result["end"] - start
            print(
                json.dumps(
                    {
                        "events": sink.rows_written,
                        "seconds": round(seconds, 3),
                        "events_per_second": round(sink.rows_written / seconds, 1),
                        "metrics": settings.web_port >= 0,
                        "peak_rss_mb": round(
                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                        ),
                    }
                ),
                flush=True,
            )
            os.kill(os.getpid(), signal.SIGTERM)

    import faust

    with contextlib.suppress(SystemExit):
        faust.Worker(
            app, loglevel="error", quiet=True, redirect_stdouts=False
        ).execute_from_commandline()


if __name__ == "__main__":
    main()
