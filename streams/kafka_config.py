"""Kafka connection options from settings, for kafka-python and for Faust (aiokafka).

One place turns ``KafkaSettings`` into client arguments, so producers and workers connect
the same way (SASL PLAIN/SCRAM, TLS). Passwords leave the settings object only here.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from pipeline.settings import KafkaSettings

__all__ = [
    "aiokafka_consumer_options",
    "faust_broker",
    "faust_credentials",
    "kafka_python_options",
    "ssl_context",
]


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
