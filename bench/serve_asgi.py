"""Run a benchmark-only ASGI app with the uvicorn options `python -m app` uses.

`python -m bench.serve_asgi MODULE:APP --port N`: uvloop + httptools (uvicorn's
"auto" with `uvicorn[standard]`), one worker, no access log, no server header,
so that the floor and the naive baseline differ from the service only in
their app.
"""

import argparse
import os

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", help="MODULE:ATTRIBUTE of the ASGI app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    uvicorn.run(
        args.app,
        host="127.0.0.1",
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
