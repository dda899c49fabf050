"""What holdfast.Logger.log() costs the caller's thread, against a real server that stores
everything meanwhile (issue 10's target: at most 50 microseconds per call).

    HOLDFAST_SERVER_BIN=$T/holdfast-server-under-test \\
        ~/.cache/holdfast-venv/bin/python benches/python/log_overhead.py --calls 200000

Starts its own server (as the Python tests do), logs `--calls` interactions of 1-2 KB from
one thread at full speed, timing each call, then waits until all are stored."""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python", "tests"))

import holdfast  # noqa: E402
from conftest import INGEST_TOKEN, ServerProcess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(tmp)
        server.start()
        try:
            client = holdfast.Client(f"http://{server.grpc_addr}", token=INGEST_TOKEN)
            logger = holdfast.Logger(client, app="bench", max_queue=args.calls,
                                     batch_size=args.batch, interval=0.5)
            prompt = "How do I file my expenses for the offsite? " * 30
            answer = "Open the expenses app, choose New claim, and attach receipts. " * 25
            timings = []
            started = time.perf_counter()
            for i in range(args.calls):
                t0 = time.perf_counter_ns()
                logger.log(f"user{i % 500}@contoso.com", prompt, answer, thread_id=f"t{i // 10}")
                timings.append(time.perf_counter_ns() - t0)
            logged = time.perf_counter() - started
            assert logger.flush(timeout=600), logger.counters
            stored = time.perf_counter() - started
            timings.sort()
            def pct(p):
                return timings[min(len(timings) - 1, int(len(timings) * p))] / 1000

            mean = sum(timings) / len(timings) / 1000
            print(f"log() per call, {args.calls} calls: mean {mean:.1f} us, "
                  f"p50 {pct(0.50):.1f} us, p99 {pct(0.99):.1f} us, p99.9 {pct(0.999):.1f} us, "
                  f"max {timings[-1] / 1000:.0f} us")
            print(f"logged in {logged:.2f} s; all stored after {stored:.2f} s "
                  f"({args.calls / stored:,.0f}/s); counters {logger.counters}")
            logger.shutdown()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
