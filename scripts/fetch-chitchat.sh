#!/usr/bin/env bash
# Real conversational text for tests and benchmarks: the BYU Chit-Chat dataset (MIT licence),
# shipped inside the PyPI package chitchat-dataset 0.9.0 — 1,315 real people, 2018 timestamps.
# Writes JSON Lines, one interaction per line, with the field names of docs/contract.md ("Data model"):
#   mailbox_id, client_key, thread_id, app, created_at, prompt, response
# usage: fetch-chitchat.sh [OUT.jsonl] [DOWNLOAD_DIR]      (about 130k lines, 70 MB)
set -euo pipefail
out=${1:-chitchat.jsonl}
dl=${2:-$(mktemp -d)}
python3 -m pip download --quiet --no-deps -d "$dl" chitchat-dataset==0.9.0
python3 - "$dl" "$out" <<'PY'
import json, sys, zipfile, glob
dl, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(dl + "/chitchat_dataset-0.9.0-*.whl")[0]
data = json.loads(zipfile.ZipFile(wheel).read("chitchat_dataset/dataset.json"))
apps = ["Teams", "Word", "Outlook", "BizChat", "WebChat"]
n = 0
with open(out, "w", encoding="utf-8") as f:
    for cid, conv in data.items():
        turns = conv["messages"]
        for i in range(len(turns) - 1):
            a, b = turns[i], turns[i + 1]
            if not a or not b or not a[0].get("timestamp"):
                continue
            ts = a[0]["timestamp"]
            f.write(json.dumps({
                "mailbox_id": a[0]["sender"] + "@chitchat.example",
                "client_key": "%s#%d" % (cid, i),
                "thread_id": cid,
                "app": apps[sum(map(ord, cid)) % len(apps)],
                "created_at": ts if ts.endswith("Z") else ts + "Z",
                "prompt": "\n".join(m["text"] for m in a),
                "response": "\n".join(m["text"] for m in b),
            }, ensure_ascii=False) + "\n")
            n += 1
print(f"wrote {n} interactions to {out}", file=sys.stderr)
PY
