#!/usr/bin/env python3
"""A minimal OTLP/gRPC trace receiver for scripts/check-tracing: an independent peer (Python
grpcio and the official opentelemetry-proto stubs) that writes every span it receives as one
JSON line: service, name, kind, trace_id, span_id, parent_span_id, attributes.

Usage: otlp-receiver.py OUTPUT_FILE PORT_FILE   (binds 127.0.0.1:0, writes the port to
PORT_FILE, serves until SIGTERM)."""
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc

output_path, port_path = sys.argv[1], sys.argv[2]
lock = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver(pb_grpc.TraceServiceServicer):
    def Export(self, request, context):
        lines = []
        for resource_spans in request.resource_spans:
            attributes = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            service = attributes.get("service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(json.dumps({
                        "service": service,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": {a.key: value(a.value) for a in span.attributes},
                    }))
        with lock, open(output_path, "a") as out:
            for line in lines:
                out.write(line + "\n")
        return pb.ExportTraceServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
pb_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
with open(port_path, "w") as f:
    f.write(str(port))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
server.stop(grace=1).wait()
