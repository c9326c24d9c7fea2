"""kafka-python producers: topic set-up, and sending events to the ingest topics.

Every topic the pipeline creates says how it is kept (``topic_configs``: streams are
deleted by age, the repartition topic after seven days); table changelogs, which Faust
creates, are compacted (``streams.app``), and ``check_changelogs`` refuses existing ones
that are not.

Sends are idempotent and ordered per partition (``enable_idempotence``, ``acks=all``): the
worker's lateness rule depends on each partition's order, and a retried batch must not be
written twice.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.settings import Settings
from streams.kafka_config import (
    ENVELOPE_TOPIC_CONFIG,
    INGEST_TOPIC_CONFIG,
    REPARTITION_TOPIC_CONFIG,
    kafka_python_options,
)

__all__ = [
    "EventProducer",
    "KafkaUnavailable",
    "OutgoingMessage",
    "TopicMisconfigured",
    "by_campaign_topic",
    "check_changelogs",
    "delete_topics",
    "ensure_topics",
    "topic_configs",
    "topic_for_kind",
]

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The brokers cannot be reached; the message says what to check."""


class TopicMisconfigured(RuntimeError):
    """An existing topic does not match what the pipeline needs; the message says how to
    fix it."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


def topic_for_kind(settings: Settings) -> dict[str, str]:
    """Contract name of each ingest topic -> its configured Kafka topic name."""
    t = settings.topics
    return {
        "social.interactions": t.social,
        "web.events": t.web,
        "campaign.costs": t.costs,
        "campaign.meta": t.campaigns,
    }


def by_campaign_topic(settings: Settings) -> str:
    """Internal topic that repartitions contributions by campaign."""
    return f"{settings.worker.app_id}-contributions-by-campaign"


def _unreachable(settings: Settings, exc: Exception) -> KafkaUnavailable:
    kafka = settings.kafka
    if kafka.security_protocol.startswith("SASL") and not isinstance(exc, OSError):
        # The brokers answer TCP but the client gave up: kafka-python only logs an
        # authentication failure and then times out, so name the likely cause.
        return KafkaUnavailable(
            f"Kafka at {kafka.bootstrap_servers} did not accept the connection "
            f"({type(exc).__name__}): check the SASL credentials of user "
            f"{kafka.sasl_username!r} (mechanism {kafka.sasl_mechanism or 'PLAIN'}) in "
            "SOCIALROI_KAFKA__SASL_USERNAME / SOCIALROI_KAFKA__SASL_PASSWORD, and the "
            "security protocol"
        )
    local = kafka.bootstrap_servers == type(kafka).model_fields["bootstrap_servers"].default
    how = (
        # the development broker of deploy/local is the default's only meaning
        "start the local broker with `bash deploy/local/kafka.sh start` or set "
        "SOCIALROI_KAFKA__BOOTSTRAP_SERVERS"
        if local
        else "check that the brokers run and SOCIALROI_KAFKA__BOOTSTRAP_SERVERS names them"
    )
    return KafkaUnavailable(
        f"cannot reach Kafka at {kafka.bootstrap_servers} ({type(exc).__name__}); {how}"
    )


def _probe(settings: Settings) -> None:
    """Fail fast, in one line, when no bootstrap server accepts a TCP connection (the
    client would otherwise retry for half a minute and log every attempt)."""
    last: OSError | None = None
    for server in settings.kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
                return
        except (OSError, ValueError) as exc:
            last = exc if isinstance(exc, OSError) else OSError(str(exc))
    assert last is not None
    raise _unreachable(settings, last)


def kafka_reachable(settings: Settings) -> bool:
    """Whether a bootstrap server accepts a TCP connection (the collector's readiness probe)."""
    try:
        _probe(settings)
    except KafkaUnavailable:
        return False
    return True


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic ``ensure_topics`` creates -> the topic configs it is created with. Table
    changelogs are created by Faust when the worker starts (``streams.app``)."""
    configs = {name: dict(INGEST_TOPIC_CONFIG) for name in topic_for_kind(settings).values()}
    for name in (settings.topics.dead_letters, settings.topics.late):
        configs[name] = dict(ENVELOPE_TOPIC_CONFIG)
    configs[by_campaign_topic(settings)] = dict(REPARTITION_TOPIC_CONFIG)
    return configs


def _admin(settings: Settings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            client_id="socialroi-admin",
            request_timeout_ms=15000,
            **kafka_python_options(settings.kafka),
        )
    except KafkaError as exc:
        raise _unreachable(settings, exc) from exc


def delete_topics(settings: Settings, prefix: str) -> None:
    """Delete every topic whose name starts with ``prefix`` (a bench or test run's own
    topics). Raises ``KafkaUnavailable`` when the brokers cannot be reached."""
    admin = _admin(settings)
    try:
        names = [t for t in admin.list_topics() if t.startswith(prefix)]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()


def ensure_topics(settings: Settings) -> None:
    """Create every topic the pipeline uses, with the configured partitions and the configs
    of ``topic_configs``, if missing. Topics that exist keep their configs (an operator may
    have changed a retention).

    Raises ``KafkaUnavailable`` when the brokers cannot be reached, and
    ``TopicMisconfigured`` if an existing topic has a different partition count than
    configured (lateness and the simulator's truth depend on it).
    """
    _probe(settings)
    configs = topic_configs(settings)
    names = list(configs)
    admin = _admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name,
                settings.kafka.partitions,
                settings.kafka.replication_factor,
                topic_configs=configs[name],
            )
            for name in names
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won
                admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
        # Just after creation a topic can be described before its metadata has spread
        # (an error code and no partitions): ask again, for up to 15 s.
        deadline = time.monotonic() + 15
        while True:
            described = admin.describe_topics(names)
            settled = all(i.get("error_code", 0) == 0 and i["partitions"] for i in described)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for info in described:
            count = len(info["partitions"])
            if count != settings.kafka.partitions:
                name = info.get("topic") or info.get("name")
                raise TopicMisconfigured(
                    f"topic {name} has {count} partitions, settings say "
                    f"{settings.kafka.partitions}; set SOCIALROI_KAFKA__PARTITIONS={count}"
                )
    finally:
        admin.close()


def check_changelogs(settings: Settings, changelogs: Iterable[str]) -> None:
    """Raise ``TopicMisconfigured`` if one of the table changelogs exists but is not
    compacted (created by hand, or by a broker that creates topics on first use): its
    state would be deleted by age, and a restart would recover only part of it. Faust
    creates missing ones itself, compacted, and never changes an existing one."""
    names = sorted(changelogs)
    if not names:
        return
    admin = _admin(settings)
    try:
        topics = set(admin.list_topics())
        existing = [name for name in names if name in topics]
        if not existing:
            return
        wanted = {"cleanup.policy": None}
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs=wanted) for name in existing],
            config_filter="all",
        )
    finally:
        admin.close()
    for name, found in described["topic"].items():
        policy = found.get("cleanup.policy", {}).get("value")
        if policy != "compact":
            raise TopicMisconfigured(
                f"table changelog {name} has cleanup.policy={policy}, not compact: its state "
                "would be deleted by age; fix it with `kafka-configs.sh --alter "
                f"--entity-type topics --entity-name {name} --add-config cleanup.policy=compact`"
            )


class EventProducer:
    """Sends messages; ``close`` flushes and waits for every acknowledgement."""

    def __init__(self, settings: Settings, client_id: str = "socialroi-producer") -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: KafkaProducer | None = None
        self.sent = 0

    def start(self, topics: Iterable[str] = ()) -> None:
        """Connect; with ``topics``, also learn their partitions now: otherwise the first
        send to each topic waits for a metadata round trip of its own (0.4 s in all for
        the four ingest topics, measured)."""
        _probe(self._settings)
        try:
            self._producer = KafkaProducer(
                client_id=self._client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=20,
                batch_size=256 * 1024,
                max_request_size=16 * 1024 * 1024,
                **kafka_python_options(self._settings.kafka),
            )
            for topic in topics:
                self._producer.partitions_for(topic)
        except KafkaError as exc:
            raise _unreachable(self._settings, exc) from exc

    def send_all(self, messages: Iterable[OutgoingMessage], rate: float | None = None) -> int:
        """Send every message, at most ``rate`` per second if given. Returns the count."""
        assert self._producer is not None, "start() first"
        began = time.monotonic()
        count = 0
        for msg in messages:
            self._producer.send(msg.topic, value=msg.value, key=msg.key, partition=msg.partition)
            count += 1
            if rate and count % 100 == 0:
                ahead = count / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        self.sent += count
        return count

    def send_confirmed(self, messages: Iterable[OutgoingMessage], timeout: float = 30.0) -> int:
        """Send and wait until Kafka acknowledged every message; raises ``KafkaError``."""
        assert self._producer is not None, "start() first"
        futures = [
            self._producer.send(m.topic, value=m.value, key=m.key, partition=m.partition)
            for m in messages
        ]
        self._producer.flush(timeout=timeout)
        for future in futures:
            future.get(timeout=timeout)
        self.sent += len(futures)
        return len(futures)

    def flush(self, timeout: float = 60.0) -> None:
        assert self._producer is not None, "start() first"
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=60)
            self._producer.close(timeout=30)
            self._producer = None
