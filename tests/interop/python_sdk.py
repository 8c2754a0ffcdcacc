#!/usr/bin/env python3
"""Talks to a BareMetal ImageService (the simulator, or the proxy in front of it) with the
official Python SDK (`pip install yandexcloud`), over a plaintext channel (h2c):

    tests/interop/python_sdk.py ADDRESS [--token T] [--other-token T] [--image ID]

ADDRESS is host:port (127.0.0.1:9000 for `cargo run -p baremetal-api-sim`). The defaults are
the simulator's demo data: Alice's token and image, Bob's token as the other tenant.

Calls, one JSON line each: Get (twice), Get with the other tenant's token (PERMISSION_DENIED,
or NOT_FOUND where forbidden images are hidden), Get without a token (UNAUTHENTICATED), List
of the image's folder, Update of its description followed by a Get that must show it, and an
Update that puts the description back. A line has the call, the status code's name, the image
(id, status, description) or the error's message and request ID (from the google.rpc.Status
details), and the answer's x-cache and cache-status metadata when present. Exits 1 on the
first unexpected result, 2 on bad arguments.
"""

import argparse
import json
import sys
import time

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2
from yandex.cloud.baremetal.v1alpha import image_pb2, image_service_pb2
from yandex.cloud.baremetal.v1alpha.image_service_pb2_grpc import ImageServiceStub

TIMEOUT = 10  # seconds, per call
CACHE_METADATA = ("x-cache", "cache-status")


class Unexpected(Exception):
    pass


def cache_metadata(metadata):
    """The cache's metadata among (key, value) pairs."""
    return {key: value for key, value in (metadata or ()) if key in CACHE_METADATA}


def image_summary(image):
    return {
        "id": image.id,
        "status": image_pb2.Image.Status.Name(image.status),
        "description": image.description,
    }


def error_request_id(error):
    """The RequestInfo request ID in the error's grpc-status-details-bin, if any."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.RequestInfo()
            if detail.Unpack(info):
                return info.request_id
    return None


def call(name, method, request, token, expected, summarize=None):
    """Calls `method`, prints one JSON line, and returns the answer; raises Unexpected when
    the status code is not in `expected`."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    line = {"call": name}
    try:
        answer, rpc = method.with_call(request, metadata=metadata, timeout=TIMEOUT)
        code = grpc.StatusCode.OK
        line["code"] = code.name
        if summarize:
            line.update(summarize(answer))
        line["metadata"] = cache_metadata(rpc.initial_metadata())
    except grpc.RpcError as error:
        answer = None
        code = error.code()
        line["code"] = code.name
        line["message"] = error.details()
        line["request_id"] = error_request_id(error)
        # A trailers-only error answer has its metadata in the trailers.
        both = (error.initial_metadata() or ()) + (error.trailing_metadata() or ())
        line["metadata"] = cache_metadata(both)
    print(json.dumps(line), flush=True)
    if code not in expected:
        wanted = " or ".join(c.name for c in expected)
        raise Unexpected(f"{name}: {code.name}, expected {wanted}")
    return answer


def check(condition, message):
    if not condition:
        raise Unexpected(message)


def run(args):
    with grpc.insecure_channel(args.address) as channel:
        stub = ImageServiceStub(channel)
        get = image_service_pb2.GetImageRequest(image_id=args.image)
        ok = (grpc.StatusCode.OK,)
        summary = lambda image: {"image": image_summary(image)}  # noqa: E731

        first = call("Get", stub.Get, get, args.token, ok, summary)
        second = call("Get again", stub.Get, get, args.token, ok, summary)
        for image in (first, second):
            check(image.id == args.image, f"Get answered image {image.id}, not {args.image}")
        check(first == second, "the two Gets answered different images")

        hidden = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
        call("Get as another tenant", stub.Get, get, args.other_token, hidden)
        unauthenticated = (grpc.StatusCode.UNAUTHENTICATED,)
        call("Get without a token", stub.Get, get, None, unauthenticated)

        listed = call(
            "List",
            stub.List,
            image_service_pb2.ListImagesRequest(folder_id=first.folder_id, page_size=1000),
            args.token,
            ok,
            lambda answer: {"images": [image.id for image in answer.images]},
        )
        check(
            any(image.id == args.image for image in listed.images),
            f"List of folder {first.folder_id} lacks {args.image}",
        )

        description = f"interop check {time.time():.6f}"
        for name, text in (("Update", description), ("Update back", first.description)):
            update = image_service_pb2.UpdateImageRequest(
                image_id=args.image,
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                description=text,
            )
            operation = call(
                name,
                stub.Update,
                update,
                args.token,
                ok,
                lambda op: {"operation": {"id": op.id, "done": op.done}},
            )
            check(operation.done, f"{name}: the operation is not done")
            if name == "Update":
                after = call("Get after Update", stub.Get, get, args.token, ok, summary)
                check(
                    after.description == description,
                    f"Get after Update shows {after.description!r}, not {description!r}",
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", metavar="ADDRESS", help="host:port of the gRPC server")
    parser.add_argument("--token", default="t1.alice-demo-token")
    parser.add_argument("--other-token", default="t1.bob-demo-token")
    parser.add_argument("--image", default="ly5alice0ready000001")
    args = parser.parse_args()
    try:
        run(args)
    except Unexpected as problem:
        print(f"python_sdk.py: unexpected: {problem}", file=sys.stderr)
        return 1
    print("python_sdk.py: all calls answered as expected", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
