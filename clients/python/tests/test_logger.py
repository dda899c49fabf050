"""The background logger: batches, counters, and a server restart that loses nothing the
logger accepted and blocks no caller."""

import threading
import time
import uuid

import holdfast
from conftest import INGEST_TOKEN


def test_batches_flush_and_counters(server):
    mailbox = f"log-{uuid.uuid4().hex[:8]}@contoso.com"
    client = holdfast.Client(f"http://{server.grpc_addr}", token=INGEST_TOKEN)
    logger = holdfast.Logger(client, app="Chat", batch_size=50, interval=0.2)
    for i in range(120):
        assert logger.log(mailbox, f"prompt {i}", f"answer {i}", thread_id="t")
    assert logger.log("", "no mailbox", "invalid")  # accepted here, rejected by the server
    assert logger.flush(timeout=30)
    assert logger.counters.stored == 120
    assert logger.counters.rejected == 1
    assert logger.counters.dropped == 0
    assert len(list(client.list(mailbox))) == 120
    assert logger.shutdown(timeout=5)
    assert not logger.log(mailbox, "after shutdown", "x"), "refused, counted, never raised"
    assert logger.counters.dropped == 1


def test_a_full_queue_drops_and_counts_without_blocking(server):
    client = holdfast.Client("http://127.0.0.1:9", token=INGEST_TOKEN)  # nothing listens
    logger = holdfast.Logger(client, max_queue=10, batch_size=5, interval=0.05,
                             retry_initial=0.05, retry_max=0.1)
    accepted = sum(logger.log("a@contoso.com", "p", "r") for _ in range(100))
    assert accepted < 100
    assert logger.counters.dropped == 100 - accepted
    assert not logger.shutdown(timeout=0.5), "what could not be sent is reported"
    assert logger.counters.dropped + logger.counters.stored == 100


def test_a_server_restart_loses_nothing_acknowledged_and_blocks_no_caller(own_server):
    mailbox = f"restart-{uuid.uuid4().hex[:8]}@contoso.com"
    client = holdfast.Client(f"http://{own_server.grpc_addr}", token=INGEST_TOKEN, timeout=5)
    logger = holdfast.Logger(client, app="Chat", batch_size=20, interval=0.05,
                             retry_initial=0.05, retry_max=0.5)
    accepted = []
    slowest = [0.0]
    stop = threading.Event()

    def request_path():
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            ok = logger.log(mailbox, f"prompt {i}", f"answer {i}", client_key=f"k{i}")
            slowest[0] = max(slowest[0], time.perf_counter() - started)
            if ok:
                accepted.append(f"k{i}")
            i += 1
            time.sleep(0.001)

    caller = threading.Thread(target=request_path)
    caller.start()
    time.sleep(0.5)
    own_server.stop()
    time.sleep(1.0)  # the caller keeps logging while the server is down
    own_server.start()
    time.sleep(0.5)
    stop.set()
    caller.join()
    assert logger.flush(timeout=60), logger.counters
    assert logger.counters.dropped == 0, logger.counters
    assert logger.counters.retries > 0, "the restart was noticed"
    stored = {i.client_key for i in client.list(mailbox, page_size=1000)}
    assert set(accepted) <= stored, f"lost {len(set(accepted) - stored)} acknowledged items"
    # log() never waited on the network (a generous bound: it is a queue put).
    assert slowest[0] < 0.5, slowest[0]
    logger.shutdown()
