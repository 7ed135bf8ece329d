"""`grpcurl -plaintext TARGET list` / `describe SERVICE`, through server reflection, in Python.

grpcurl is not packaged by Debian, so CI checks discovery with grpcio-reflection (already in .venv):

    python scripts/grpc_list.py [--target HOST:PORT] [--expect SERVICE] [--describe SERVICE]

Prints every service the server reflects, and with --describe the methods of one. Exits 1 when
--expect names a service that is not listed, 2 when the server cannot be asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=os.environ.get("DEDUP_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--expect", action="append", default=[], help="fail unless this service is listed")
    parser.add_argument("--describe", help="also print the methods of this service")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)

    with grpc.insecure_channel(args.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
            database = ProtoReflectionDescriptorDatabase(channel)
            services = sorted(database.get_services())
            for name in services:
                print(name)
            if args.describe:
                service = DescriptorPool(database).FindServiceByName(args.describe)
                print(f"{service.full_name} is a service:")
                for method in service.methods:
                    stream_in = "stream " if method.client_streaming else ""
                    stream_out = "stream " if method.server_streaming else ""
                    print(
                        f"  rpc {method.name} ( {stream_in}.{method.input_type.full_name} )"
                        f" returns ( {stream_out}.{method.output_type.full_name} );"
                    )
        except (grpc.FutureTimeoutError, grpc.RpcError, KeyError) as error:
            print(f"error: reflection on {args.target} failed: {error!r}", file=sys.stderr)
            return 2
    missing = [name for name in args.expect if name not in services]
    if missing:
        print(f"error: not listed through reflection: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
