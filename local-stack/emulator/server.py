#!/usr/bin/env python3
"""moto server with the fleet-install extensions, bound to 127.0.0.1.

    .venv/bin/python local-stack/emulator/server.py --port 5055 [--lambda-endpoint http://127.0.0.1:9099]

Step Functions executes state machines in-process; Lambda tasks go to cargo lambda watch at LAMBDA_ENDPOINT;
GET/DELETE /_fleet/api-calls counts API calls; GET /_fleet/health answers once the server is up.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("MOTO_PORT", "5055")))
    ap.add_argument("--lambda-endpoint", default=os.environ.get("LAMBDA_ENDPOINT"))
    args = ap.parse_args(argv)
    # moto_server only sets MOTO_PORT when it is unset, and the Step Functions engine calls back to
    # localhost:$MOTO_PORT: both must be the port we bind, before moto is imported.
    os.environ["MOTO_PORT"] = str(args.port)
    if args.lambda_endpoint:
        os.environ["LAMBDA_ENDPOINT"] = args.lambda_endpoint
    os.environ.setdefault("LAMBDA_ENDPOINT", "http://127.0.0.1:9099")
    # AWS managed policies (AmazonSSMManagedInstanceCore) exist only with this: `fleet-install prereq` attaches it.
    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    sys.path.insert(0, HERE)
    import moto_ext

    moto_ext.install()
    import moto.server

    moto.server.main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
