#!/usr/bin/env python3
"""An independent gRPC client (grpcio, not tonic) against a kagent over mTLS.

Lists the agent's services through gRPC server reflection (grpc.reflection.v1 and v1alpha),
checks that `kagent.v1.Agent` and `grpc.health.v1.Health` are served and that the Agent's
descriptor carries its methods, then calls Health.Check and expects SERVING.

Usage: reflect.py --addr 127.0.0.1:7443 --ca ca.crt --cert client.crt --key client.key
                  [--server-name localhost]
Exit code 0 when every check passed; prints one line per check.
"""

import argparse
import sys

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

REQUIRED = ("kagent.v1.Agent", "grpc.health.v1.Health")
AGENT_METHODS = ("Facts", "Apply", "WatchOperation", "ListOperations")
TIMEOUT = 10.0


def reflection_call(channel, package, request):
    """One ServerReflectionInfo exchange. v1 and v1alpha share the same messages on the wire,
    so the v1alpha classes serve both paths."""
    method = channel.stream_stream(
        f"/{package}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = list(method(iter([request]), timeout=TIMEOUT))
    if len(responses) != 1:
        raise RuntimeError(f"{package}: expected one response, got {len(responses)}")
    resp = responses[0]
    if resp.HasField("error_response"):
        raise RuntimeError(
            f"{package}: error {resp.error_response.error_code}: "
            f"{resp.error_response.error_message}"
        )
    return resp


def list_services(channel, package):
    resp = reflection_call(channel, package, reflection_pb2.ServerReflectionRequest(list_services=""))
    return sorted(s.name for s in resp.list_services_response.service)


def agent_methods(channel, package):
    resp = reflection_call(
        channel,
        package,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="kagent.v1.Agent"),
    )
    methods = set()
    for raw in resp.file_descriptor_response.file_descriptor_proto:
        fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for svc in fd.service:
            if f"{fd.package}.{svc.name}" == "kagent.v1.Agent":
                methods.update(m.name for m in svc.method)
    return methods


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--server-name", default="localhost")
    args = ap.parse_args()

    with open(args.ca, "rb") as f:
        ca = f.read()
    with open(args.cert, "rb") as f:
        cert = f.read()
    with open(args.key, "rb") as f:
        key = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    options = (("grpc.ssl_target_name_override", args.server_name),)
    failures = []
    with grpc.secure_channel(args.addr, creds, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
            try:
                services = list_services(channel, package)
            except Exception as e:  # noqa: BLE001 - report every failure, not only the first
                failures.append(f"{package}: list_services failed: {e}")
                continue
            print(f"{package}: services: {', '.join(services)}")
            for name in REQUIRED:
                if name not in services:
                    failures.append(f"{package}: {name} is not listed")
            try:
                methods = agent_methods(channel, package)
            except Exception as e:  # noqa: BLE001
                failures.append(f"{package}: file_containing_symbol failed: {e}")
                continue
            print(f"{package}: kagent.v1.Agent methods: {', '.join(sorted(methods))}")
            for m in AGENT_METHODS:
                if m not in methods:
                    failures.append(f"{package}: kagent.v1.Agent has no method {m}")

        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"health: {status}")
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            failures.append(f"Health.Check returned {status}, expected SERVING")

    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    if failures:
        return 1
    print("reflect.py: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
