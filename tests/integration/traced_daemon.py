"""The daemon under the OpenTelemetry SDK's in-memory exporter, for test_traces: run as a script
with the daemon's flags; at its exit the spans go, as JSON, to $ASYNCPHP_TEST_SPANS."""

from __future__ import annotations

import atexit
import json
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asyncphp.loop.daemon import main

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)


@atexit.register
def dump() -> None:
    spans = [json.loads(span.to_json()) for span in exporter.get_finished_spans()]
    with open(os.environ["ASYNCPHP_TEST_SPANS"], "w") as out:
        json.dump(spans, out)


if __name__ == "__main__":
    sys.exit(main())
