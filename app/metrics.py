"""Every Prometheus metric, declared once on an explicit registry (one per app, so tests stay isolated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets span GPU milliseconds and CPU seconds.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
)
TOKEN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25, 0.5, 1.0)
UNIT_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
DISTANCE_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 64, 128)
IO_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        # serving core
        self.request_latency = Histogram(
            "tonewatch_request_latency_seconds",
            "End-to-end request latency; watch p99 per adapter.",
            ["route", "adapter"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tonewatch_time_to_first_token_seconds",
            "Time from arrival to first generated token.",
            ["adapter"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "tonewatch_inter_token_latency_seconds",
            "Gap between streamed tokens; rises with batch size.",
            ["adapter"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "tonewatch_queue_wait_seconds",
            "Time a request waited before joining a batch; high means add capacity.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "tonewatch_batch_size",
            "Rows per decode step; low under load means batching is not kicking in.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("tonewatch_prompt_tokens", "Prompt tokens processed.", ["adapter"], registry=r)
        self.prefix_reused_tokens = Counter(
            "tonewatch_prefix_reused_tokens",
            "Prompt tokens whose keys/values came from the prefix cache instead of a forward.",
            ["adapter"],
            registry=r,
        )
        self.prefix_cache_tokens = Gauge(
            "tonewatch_prefix_cache_tokens", "Prompt tokens whose keys/values the prefix cache holds.", registry=r
        )
        self.generated_tokens = Counter("tonewatch_generated_tokens", "Tokens generated.", ["adapter"], registry=r)
        self.requests = Counter(
            "tonewatch_requests",
            "Requests by route, adapter and HTTP status.",
            ["route", "adapter", "status"],
            registry=r,
        )
        self.queue_depth = Gauge("tonewatch_queue_depth", "Requests waiting for a batch slot.", registry=r)
        # adapters
        self.adapter_loads = Counter(
            "tonewatch_adapter_loads", "Adapter load attempts by result.", ["adapter", "result"], registry=r
        )
        self.adapter_load_seconds = Histogram(
            "tonewatch_adapter_load_seconds",
            "Time to validate and load an adapter.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.adapter_swaps = Counter("tonewatch_adapter_swaps", "Changes of the default adapter.", registry=r)
        self.adapters_loaded = Gauge("tonewatch_adapters_loaded", "Adapters currently loaded.", registry=r)
        self.active_adapter = Gauge(
            "tonewatch_active_adapter",
            "1 for the adapter that serves requests naming no model.",
            ["adapter"],
            registry=r,
        )
        # tone
        self.tone_labels = Counter(
            "tonewatch_tone_label", "Scored responses by tone label.", ["adapter", "persona", "label"], registry=r
        )
        self.persona_distance = Histogram(
            "tonewatch_persona_distance",
            "Style-space distance of responses to their persona centroid.",
            ["adapter", "persona"],
            buckets=DISTANCE_BUCKETS,
            registry=r,
        )
        self.tone_dimension = Histogram(
            "tonewatch_tone_dimension",
            "Formality, politeness and warmth of responses (0..1).",
            ["adapter", "dimension"],
            buckets=UNIT_BUCKETS,
            registry=r,
        )
        self.persona_mismatch = Counter(
            "tonewatch_persona_mismatch",
            "Responses outside their persona's calibrated radius.",
            ["adapter", "persona"],
            registry=r,
        )
        self.scoring_seconds = Histogram(
            "tonewatch_scoring_seconds", "Time to score one batch of texts.", buckets=LATENCY_BUCKETS, registry=r
        )
        # drift and history
        # stream-level drift and spikes are per replica (docs/replicas.md); queries and rules aggregate replicas
        self.drift_score = Gauge(
            "tonewatch_tone_drift_score",
            "EWMA of standardized persona deviation of the latest turn's stream, as this replica saw it "
            "(aggregate with max by (adapter, persona)).",
            ["adapter", "persona", "replica"],
            registry=r,
        )
        self.drift_alerts = Counter(
            "tonewatch_tone_drift_alerts",
            "Sequential-detector alarms: a session left its persona.",
            ["adapter", "persona"],
            registry=r,
        )
        # store-wide counts from the session index: every replica reports the same value (aggregate with max())
        self.sessions_active = Gauge(
            "tonewatch_sessions_active",
            "Sessions with a turn in the last hour, in the whole store (the same on every replica: use max()).",
            registry=r,
        )
        self.sessions_drifting = Gauge(
            "tonewatch_sessions_drifting",
            "Sessions active in the last hour whose drift detector is in alarm, store-wide (use max()); list them "
            "with GET /v1/sessions?alerting=true or the console.",
            registry=r,
        )
        self.history_write_seconds = Histogram(
            "tonewatch_history_write_seconds", "Time to persist one turn.", buckets=IO_BUCKETS, registry=r
        )
        self.history_write_errors = Counter(
            "tonewatch_history_write_errors", "Failed history writes (turn spilled locally).", registry=r
        )
        self.history_spilled = Gauge(
            "tonewatch_history_spilled_turns", "Turns waiting in the local spill for the store.", registry=r
        )
        self.history_dropped = Counter(
            "tonewatch_history_dropped_turns", "Turns lost because the spill was full.", registry=r
        )
        self.history_discarded = Counter(
            "tonewatch_history_discarded_turns",
            "Spilled turns not replayed because their session was deleted meanwhile (expected, not a loss).",
            registry=r,
        )
        self.store_circuit_open = Gauge(
            "tonewatch_store_circuit_open",
            "1 while the session store is considered down: turns spill locally, no request waits on it.",
            registry=r,
        )
        self.store_circuit_trips = Counter(
            "tonewatch_store_circuit_trips",
            "Times the store's circuit breaker opened (an outage or a hang began).",
            registry=r,
        )
        self.turns_recorded = Counter(
            "tonewatch_turns_recorded",
            "Generated responses recorded to history, by whether the client got them.",
            ["delivered"],
            registry=r,
        )
        # several replicas
        self.control_version = Gauge(
            "tonewatch_control_version",
            "Version of the shared control document this replica applied; replicas "
            "that disagree for long are not converging.",
            registry=r,
        )
        self.control_apply_errors = Counter(
            "tonewatch_control_apply_errors",
            "Parts of the shared control document this replica could not apply (see /readyz for which).",
            ["kind"],
            registry=r,
        )
        # canary rollouts
        self.canary_state = Gauge(
            "tonewatch_canary_state",
            "1 for the current canary's status (running, rolled_back, passed, promoted, stopped).",
            ["status"],
            registry=r,
        )
        self.canary_sessions = Counter(
            "tonewatch_canary_sessions", "New sessions assigned to each arm of the running canary.", ["arm"], registry=r
        )
        self.canary_turns = Counter(
            "tonewatch_canary_turns", "Scored turns of experiment sessions, per arm.", ["arm"], registry=r
        )
        self.canary_bad = Counter(
            "tonewatch_canary_bad_turns",
            "Experiment turns counted as bad by one signal (alert, mismatch, off_label, "
            "slow), per arm: compare the arms' rates.",
            ["arm", "signal"],
            registry=r,
        )
        self.canary_llr = Gauge(
            "tonewatch_canary_log_likelihood_ratio",
            "The sequential test's evidence that the canary is worse, per "
            "signal (rollback at the upper boundary, pass at the lower).",
            ["signal"],
            registry=r,
        )
        self.canary_decisions = Counter(
            "tonewatch_canary_decisions",
            "Canary decisions taken (rolled_back, passed, promoted, stopped).",
            ["decision"],
            registry=r,
        )
        for decision in ("rolled_back", "passed", "promoted", "stopped"):
            self.canary_decisions.labels(decision)  # exported from 0, so increase() sees the first decision
        # gateway mode
        self.upstream_requests = Counter(
            "tonewatch_upstream_requests",
            "Requests to the upstream engine by status (an HTTP code, unreachable, "
            "timeout, pool_full, error); a rise in non-2xx means the engine, not Tonewatch, is failing.",
            ["upstream", "status"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "tonewatch_upstream_latency_seconds",
            "Upstream time for a whole answer, per model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_ttft = Histogram(
            "tonewatch_upstream_time_to_first_token_seconds",
            "Upstream time to the first streamed text, per model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # OpenTelemetry export (only when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set)
        self.otel_dropped = Counter(
            "tonewatch_otel_dropped",
            "Spans (signal=traces) and log-based events (signal=logs) not exported because the export queue was full: "
            "the collector is down or slower than the traffic; raise OTEL_BSP_MAX_QUEUE_SIZE or fix the collector.",
            ["signal"],
            registry=r,
        )
        self.otel_export_failures = Counter(
            "tonewatch_otel_export_failures",
            "Spans and events the OTLP exporter failed to deliver (after its retries); requests are not affected.",
            ["signal"],
            registry=r,
        )
        self.latency_spikes = Counter(
            "tonewatch_latency_spikes",
            "Requests flagged by the Hampel latency filter (each replica judges against its own latencies).",
            ["adapter", "kind", "replica"],
            registry=r,
        )
