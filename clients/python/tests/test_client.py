"""The typed client against the real server: ingest, get, list, delete history, search."""

import datetime as dt
import time
import uuid

import holdfast
import pytest
from conftest import INGEST_TOKEN, REVIEWER_TOKEN

UTC = dt.timezone.utc


def test_ingest_get_list_and_delete_history(server, monkeypatch):
    monkeypatch.setenv("HOLDFAST_ADDR", f"http://{server.grpc_addr}")
    monkeypatch.setenv("HOLDFAST_TOKEN", INGEST_TOKEN)
    mailbox = f"py-{uuid.uuid4().hex[:8]}@contoso.com"
    with holdfast.Client() as client:  # from the environment, like the CLI
        items = [holdfast.Interaction(mailbox_id=mailbox, client_key=f"k{i}", app="Word",
                                      prompt=f"prompt {i}", response=f"answer {i}",
                                      thread_id="t1",
                                      created_at=dt.datetime(2026, 1, 1, 12, i, tzinfo=UTC),
                                      model=holdfast.Model(provider="openai", name="gpt-4o"),
                                      attributes={"tenant": "contoso"})
                 for i in range(3)]
        results = client.ingest(items)
        assert [r.status for r in results] == ["created"] * 3
        # A retry with the same keys stores nothing twice.
        again = client.ingest(items)
        assert [r.status for r in again] == ["duplicate"] * 3
        assert [r.id for r in again] == [r.id for r in results]
        # One invalid item is rejected with its field; the others are stored.
        mixed = client.ingest([holdfast.Interaction(mailbox_id="", client_key="x", app="Word")])
        assert mixed[0].status == "rejected" and mixed[0].field == "mailbox_id", mixed

        listed = list(client.list(mailbox, page_size=2))
        assert sorted(i.prompt for i in listed) == ["prompt 0", "prompt 1", "prompt 2"]
        got = client.get(results[0].id)
        assert (got.prompt, got.response, got.thread_id) == ("prompt 0", "answer 0", "t1")
        assert got.model.name == "gpt-4o" and got.attributes["tenant"] == "contoso"

        client.delete_history(mailbox)
        assert list(client.list(mailbox)) == []


def test_errors_are_typed_and_name_the_code(server):
    with holdfast.Client(f"http://{server.grpc_addr}", token="hf_wrong") as client:
        with pytest.raises(holdfast.HoldfastError) as refused:
            client.ingest([holdfast.Interaction(mailbox_id="a@b.c", client_key="k", app="x")])
        assert refused.value.code == "UNAUTHENTICATED"
        assert not refused.value.retryable
    with pytest.raises(ValueError):
        holdfast.Client(f"http://{server.grpc_addr}", token="")


def test_search_for_scripts(server):
    import json
    import urllib.request
    mailbox = f"search-{uuid.uuid4().hex[:8]}@contoso.com"
    marker = uuid.uuid4().hex[:10]
    with holdfast.Client(f"http://{server.grpc_addr}", token=INGEST_TOKEN) as client:
        client.ingest([holdfast.Interaction(mailbox_id=mailbox, client_key="s1", app="Teams",
                                            prompt=f"the {marker} figures")])
    request = urllib.request.Request(
        server.http_addr + "/api/v1/cases", method="POST",
        data=json.dumps({"name": "py search", "custodians": [mailbox]}).encode(),
        headers={"Authorization": f"Bearer {REVIEWER_TOKEN}", "Content-Type": "application/json"})
    case = json.loads(urllib.request.urlopen(request).read())["id"]
    with holdfast.Client(f"http://{server.grpc_addr}", token=REVIEWER_TOKEN) as reviewer:
        deadline = time.monotonic() + 30
        while True:
            page = reviewer.search(case, marker)
            if page.total == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert page.total == 1
        assert page.hits[0].mailbox_id == mailbox
