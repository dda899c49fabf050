"""What one S3 PUT costs the SeaweedFS process the dev cluster and the tests use, in CPU
seconds per PUT (read from /proc), with or without Object Lock retention. Cluster ingest
stores one object per interaction, so this bounds cluster ingest on a machine of few cores.

    python3 -m venv /tmp/s3venv && /tmp/s3venv/bin/pip install boto3
    scripts/seaweedfs.sh start /tmp/probe-s3
    /tmp/s3venv/bin/python benches/python/s3_put_probe.py /tmp/probe-s3 \\
        --puts 3000 --threads 32 --size 1000 [--no-lock]

Creates a bucket of its own (with Object Lock unless --no-lock) and PUTs `--puts` objects
of `--size` random bytes from `--threads` threads, each with a GOVERNANCE retention of one
day (as holdfast writes an item an unlocked policy retains)."""

import argparse
import datetime
import os
import threading
import time
import uuid

import boto3
from botocore.config import Config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", help="the DIR given to scripts/seaweedfs.sh start")
    parser.add_argument("--puts", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--no-lock", action="store_true")
    args = parser.parse_args()
    env = dict(kv.split("=", 1) for kv in open(os.path.join(args.dir, "s3.env")).read().split())
    weed = int(open(os.path.join(args.dir, "pid")).read())
    lock = not args.no_lock

    def client():
        return boto3.client(
            "s3",
            endpoint_url=env["endpoint"],
            aws_access_key_id=env["access_key"],
            aws_secret_access_key=env["secret_key"],
            region_name="us-east-1",
            config=Config(max_pool_connections=args.threads * 2, retries={"max_attempts": 1}),
        )

    bucket = "probe-" + uuid.uuid4().hex[:8]
    client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=lock)

    def cpu_seconds():
        fields = open(f"/proc/{weed}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    body = os.urandom(args.size)
    per_thread = args.puts // args.threads

    def work(thread):
        s3 = client()
        for n in range(per_thread):
            extra = {}
            if lock:
                extra = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until}
            s3.put_object(Bucket=bucket, Key=f"items/{thread}/{n}", Body=body, **extra)

    cpu_before, started = cpu_seconds(), time.time()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu, elapsed = cpu_seconds() - cpu_before, time.time() - started
    puts = per_thread * args.threads
    print(
        f"{puts} PUTs in {elapsed:.1f} s = {puts / elapsed:.0f}/s; "
        f"SeaweedFS CPU {cpu:.1f} s = {1000 * cpu / puts:.2f} ms per PUT"
    )


if __name__ == "__main__":
    main()
