"""Kafka options from settings, for kafka-python and for Faust (aiokafka).

One place turns ``KafkaSettings`` into client arguments, so producers and workers connect
the same way (SASL PLAIN/SCRAM, TLS). Passwords leave the settings object only here. It
also says how every topic the pipeline creates is kept (``*_TOPIC_CONFIG``) and how a
worker holds its group membership (``faust_membership``).
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
from typing import Any

import faust

from pipeline.settings import KafkaSettings, WorkerSettings

__all__ = [
    "CHANGELOG_TOPIC_CONFIG",
    "ENVELOPE_MAX_MESSAGE_BYTES",
    "ENVELOPE_TOPIC_CONFIG",
    "HEARTBEAT_INTERVAL_SECONDS",
    "INGEST_MAX_MESSAGE_BYTES",
    "INGEST_TOPIC_CONFIG",
    "REBALANCE_TIMEOUT_SECONDS",
    "REPARTITION_TOPIC_CONFIG",
    "SESSION_TIMEOUT_SECONDS",
    "STREAM_TOPIC_CONFIG",
    "aiokafka_consumer_options",
    "faust_broker",
    "faust_credentials",
    "faust_membership",
    "group_instance_id",
    "kafka_python_options",
    "ssl_context",
]

# -- how topics are kept (topic-level configs, set when the pipeline creates a topic) ------
# A table changelog holds each key's latest value, so compaction keeps exactly what a
# recovery reads; the worker writes tombstones for what expired, which compaction then
# removes. Kafka never compacts the active segment, and the worker's in-memory tables
# recover by reading the whole changelog: rolling segments every 10 minutes (or at 64 MiB,
# not the broker's 1 GiB) keeps that read to the live keys, at most as much again not yet
# compacted (``min.cleanable.dirty.ratio`` 0.5), and the last 10 minutes of writes.
CHANGELOG_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact",
    "segment.ms": str(600 * 1000),
    "segment.bytes": str(64 * 1024 * 1024),
}
# Event streams (ingest topics, dead letters, late events) are deleted by age, after the
# broker's retention (``log.retention.*``), which is the operator's to set.
STREAM_TOPIC_CONFIG: dict[str, str] = {"cleanup.policy": "delete"}
# How large a message may be, stated on the topic rather than left to the broker's
# ``message.max.bytes`` (1 MiB by default, but brokers differ): an ingest topic takes
# messages up to 1 MiB, the broker refuses larger ones to their producer (nothing is cut).
# Messages over ``limits.max_message_bytes`` (64 KiB) but within that are dead-lettered;
# a dead letter or late event carries the original whole, base64-encoded (4/3 of it) in a
# JSON envelope, so the topics carrying them (envelope topics) take 2 MiB.
INGEST_MAX_MESSAGE_BYTES = 1024 * 1024
ENVELOPE_MAX_MESSAGE_BYTES = 2 * 1024 * 1024
INGEST_TOPIC_CONFIG: dict[str, str] = {
    **STREAM_TOPIC_CONFIG,
    "max.message.bytes": str(INGEST_MAX_MESSAGE_BYTES),
}
ENVELOPE_TOPIC_CONFIG: dict[str, str] = {
    **STREAM_TOPIC_CONFIG,
    "max.message.bytes": str(ENVELOPE_MAX_MESSAGE_BYTES),
}
# The repartition topic is a stream too, but its retention is ours to choose: stage one
# commits past what it sent there, so a contribution deleted before stage two read it is
# lost. Seven days (Kafka's default, not the 24 h a broker may be set to) lets stage two
# be down that long. Change it on the topic (kafka-configs --alter): the pipeline never
# rewrites the configs of a topic that exists.
REPARTITION_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 86400 * 1000),
}

# -- group membership ------------------------------------------------------------------
# A worker is a static member (``group.instance.id``): restarted within the session timeout
# it gets its partitions back without a rebalance, and it does not leave the group when it
# stops (a clean restart is then as quick as a crashed one). A member that does not come
# back is expelled after the session timeout and its partitions move: 15 s (Faust's default
# is 60 s) plus a heartbeat for the others to hear of the rebalance keeps a takeover under
# 30 s, while the event loop may still stall for seconds in a batch without expulsion.
SESSION_TIMEOUT_SECONDS = 15.0
HEARTBEAT_INTERVAL_SECONDS = 3.0
# How long the broker waits for members to rejoin a rebalance (a member finishes its batch
# under way first, see the worker's ``_on_revoked``); one that takes longer is dropped.
REBALANCE_TIMEOUT_SECONDS = 30.0


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    if kafka.security_protocol not in {"SSL", "SASL_SSL"}:
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(
            str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
        )
    return context


def kafka_python_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by kafka-python's producer, consumer and admin client, and by
    aiokafka's clients, which name them the same way."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    return options


def aiokafka_consumer_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for a bare aiokafka consumer that never commits. aiokafka takes
    the same connection arguments as kafka-python."""
    return {
        **kafka_python_options(kafka),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }


def faust_broker(kafka: KafkaSettings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")]


def faust_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def group_instance_id(worker: WorkerSettings) -> str:
    """The worker's static membership id: the setting, else the host name and a hash of the
    absolute data dir (stable across restarts of this worker, distinct for two workers on
    one host). Kafka allows letters, digits, ``.``, ``_`` and ``-``, at most 249."""
    if worker.instance_id:
        return worker.instance_id
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:180] or "host"
    digest = hashlib.sha256(str(worker.data_dir.resolve()).encode()).hexdigest()[:12]
    return f"{host}-{digest}"


def faust_membership(worker: WorkerSettings) -> dict[str, Any]:
    """Faust settings for the worker's group membership (Faust hands them to aiokafka)."""
    return {
        "consumer_group_instance_id": group_instance_id(worker),
        "broker_session_timeout": SESSION_TIMEOUT_SECONDS,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_SECONDS,
        "broker_rebalance_timeout": REBALANCE_TIMEOUT_SECONDS,
    }
