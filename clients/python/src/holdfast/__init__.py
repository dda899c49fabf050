"""holdfast: archive assistant interactions under retention and legal holds.

- `Client`: typed calls (ingest, get, list, delete_history, search), configured from
  arguments or the CLI's environment variables (HOLDFAST_ADDR, HOLDFAST_TOKEN, ...).
- `Logger`: a background logger for request paths (bounded queue, batches, retries with the
  same client_key, flush/shutdown, counters); `log()` never raises and never blocks.
- `holdfast.otel` (extra `otel`): send OpenTelemetry GenAI traces to holdfast over OTLP.
"""

from holdfast.client import Client, HoldfastError, IngestResult, Interaction, Model
from holdfast.logger import Counters, Logger

__all__ = ["Client", "Counters", "HoldfastError", "IngestResult", "Interaction", "Logger", "Model"]
