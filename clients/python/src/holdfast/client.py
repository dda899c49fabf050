"""A typed client for holdfast's gRPC API: ingest, get, list and delete history (what an
assistant backend does), and search (for scripts). Configured like the `holdfast` CLI, from
arguments or the same environment variables."""

from __future__ import annotations

import datetime as _dt
import os
import pathlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import grpc
from google.protobuf import timestamp_pb2

from holdfast.v1 import holdfast_pb2 as pb
from holdfast.v1 import holdfast_pb2_grpc as rpc

DEFAULT_ADDR = "http://127.0.0.1:50051"


class HoldfastError(Exception):
    """A call the server refused or could not answer: its gRPC code name and message (which
    never contain prompt or response text)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


@dataclass
class Model:
    provider: str = ""
    name: str = ""
    version: str = ""


@dataclass
class Interaction:
    """One interaction as the backend sends it. `client_key` makes retries safe: the same key
    and content is answered `duplicate`, never stored twice."""

    mailbox_id: str
    client_key: str
    app: str
    prompt: str = ""
    response: str = ""
    created_at: Optional[_dt.datetime] = None  # default: when it is sent
    thread_id: str = ""
    model: Model = field(default_factory=Model)
    sensitivity_label: str = ""
    attributes: Dict[str, str] = field(default_factory=dict)

    def to_proto(self) -> pb.InteractionInput:
        created = self.created_at or _dt.datetime.now(_dt.timezone.utc)
        if created.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        timestamp = timestamp_pb2.Timestamp()
        timestamp.FromDatetime(created.astimezone(_dt.timezone.utc))
        return pb.InteractionInput(
            client_key=self.client_key,
            mailbox_id=self.mailbox_id,
            thread_id=self.thread_id,
            app=self.app,
            created_at=timestamp,
            prompt=self.prompt,
            response=self.response,
            model=pb.Model(provider=self.model.provider, name=self.model.name,
                           version=self.model.version),
            sensitivity_label=self.sensitivity_label,
            attributes=self.attributes,
        )


@dataclass
class IngestResult:
    index: int
    status: str  # "created", "duplicate" or "rejected"
    id: str
    code: str = ""
    field: str = ""
    reason: str = ""

    @property
    def stored(self) -> bool:
        return self.status in ("created", "duplicate")


_STATUS = {
    pb.INGEST_STATUS_CREATED: "created",
    pb.INGEST_STATUS_DUPLICATE: "duplicate",
    pb.INGEST_STATUS_REJECTED: "rejected",
}


def _env_token() -> Optional[str]:
    token = os.environ.get("HOLDFAST_TOKEN")
    if token:
        return token.strip()
    path = os.environ.get("HOLDFAST_TOKEN_FILE")
    if path:
        return pathlib.Path(path).read_text(encoding="utf-8").strip()
    return None


def _read(path: Optional[str]) -> Optional[bytes]:
    return pathlib.Path(path).read_bytes() if path else None


class Client:
    """A connection to holdfast. Arguments left out come from the environment, as for the CLI:
    `HOLDFAST_ADDR` (default http://127.0.0.1:50051; https:// means TLS), `HOLDFAST_TOKEN` or
    `HOLDFAST_TOKEN_FILE`, `HOLDFAST_TLS_CA`, `HOLDFAST_TLS_CERT` and `HOLDFAST_TLS_KEY`
    (client certificate), `HOLDFAST_TLS_DOMAIN` (the name to expect in the server's
    certificate)."""

    def __init__(self, addr: Optional[str] = None, token: Optional[str] = None, *,
                 tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, tls_domain: Optional[str] = None,
                 timeout: float = 30.0):
        addr = addr or os.environ.get("HOLDFAST_ADDR") or DEFAULT_ADDR
        token = token or _env_token()
        if not token:
            raise ValueError("no token: pass token= or set HOLDFAST_TOKEN or HOLDFAST_TOKEN_FILE")
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),)
        options = [("grpc.max_send_message_length", 17 << 20),
                   ("grpc.max_receive_message_length", 64 << 20)]
        tls_ca = tls_ca or os.environ.get("HOLDFAST_TLS_CA")
        tls_cert = tls_cert or os.environ.get("HOLDFAST_TLS_CERT")
        tls_key = tls_key or os.environ.get("HOLDFAST_TLS_KEY")
        tls_domain = tls_domain or os.environ.get("HOLDFAST_TLS_DOMAIN")
        if addr.startswith("https://") or tls_ca:
            target = addr.split("://", 1)[-1]
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca), private_key=_read(tls_key),
                certificate_chain=_read(tls_cert))
            if tls_domain:
                options.append(("grpc.ssl_target_name_override", tls_domain))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(addr.split("://", 1)[-1], options=options)
        self._interactions = rpc.InteractionServiceStub(self._channel)
        self._discovery = rpc.DiscoveryServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: Optional[float] = None):
        try:
            return method(request, metadata=self._metadata,
                          timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as error:  # a grpc.Call
            raise HoldfastError(error.code().name, error.details() or "") from None

    def ingest(self, interactions: Sequence[Interaction], *,
               timeout: Optional[float] = None) -> List[IngestResult]:
        """Stores a batch; one result per item, in order. Raises `HoldfastError` only when the
        whole batch failed (then nothing of it was acknowledged; retrying is safe)."""
        request = pb.IngestRequest(interactions=[i.to_proto() for i in interactions])
        return self.ingest_proto(request, timeout=timeout)

    def ingest_proto(self, request: pb.IngestRequest, *,
                     timeout: Optional[float] = None) -> List[IngestResult]:
        response = self._call(self._interactions.Ingest, request, timeout)
        return [IngestResult(index=r.index, status=_STATUS.get(r.status, "rejected"), id=r.id,
                             code=pb.RejectCode.Name(r.code) if r.code else "",
                             field=r.field, reason=r.reason)
                for r in response.results]

    def get(self, interaction_id: str) -> pb.Interaction:
        return self._call(self._interactions.GetInteraction,
                          pb.GetInteractionRequest(id=interaction_id))

    def list(self, mailbox_id: str, *, thread_id: str = "",
             page_size: int = 100) -> Iterator[pb.Interaction]:
        """Every interaction of a mailbox (or one thread of it) still in its user's view, page
        by page."""
        token = ""
        while True:
            page = self._call(self._interactions.ListInteractions, pb.ListInteractionsRequest(
                mailbox_id=mailbox_id, thread_id=thread_id, page_size=page_size,
                page_token=token))
            yield from page.interactions
            token = page.next_page_token
            if not token:
                return

    def delete_history(self, mailbox_id: str, **fields) -> pb.DeleteHistoryResponse:
        """The user deletes their history: items leave their view (retention and holds still
        decide when they are destroyed). Extra fields are DeleteHistoryRequest's."""
        return self._call(self._interactions.DeleteHistory,
                          pb.DeleteHistoryRequest(mailbox_id=mailbox_id, **fields))

    def search(self, case_id: str, query: str, **fields) -> pb.SearchResponse:
        """One page of a KQL search in a case (eDiscovery roles). Extra fields are
        SearchRequest's (page_size, page_token, sort, mailboxes)."""
        return self._call(self._discovery.Search,
                          pb.SearchRequest(case_id=case_id, query=query, **fields))
