"""Shared helpers of the paho-mqtt 2.x scripts run by the node integration tests.

Each script connects to the broker given on its command line, runs one scenario and prints
one JSON document on stdout for the Rust test to check; it exits non-zero on any failure.
"""

import argparse
import json
import queue
import sys
import threading

import paho.mqtt.client as mqtt

TIMEOUT_SECS = 10


def parse_args(extra=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", choices=["311", "5"], default="5")
    for name, kwargs in (extra or {}).items():
        parser.add_argument(name, **kwargs)
    return parser.parse_args()


def protocol(version):
    return mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


class Client:
    """A paho client run by its network thread, with received messages in a queue."""

    def __init__(self, args, client_id, clean=True, session_expiry=None, will=None):
        self.version = args.version
        kwargs = {"client_id": client_id, "protocol": protocol(args.version)}
        if args.version == "311":
            kwargs["clean_session"] = clean
        transport = getattr(args, "transport", "tcp")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport=transport, **kwargs)
        if transport == "websockets":
            self.client.ws_set_options(path=args.ws_path)
        if getattr(args, "cafile", None):
            self.client.tls_set(ca_certs=args.cafile, certfile=args.certfile, keyfile=args.keyfile)
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.session_present = None
        self.connect_reason = None
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _client, _userdata, message: self.messages.put(message)
        self.client.on_subscribe = self._on_subscribe
        if will is not None:
            topic, payload, qos, retain, properties = will
            self.client.will_set(topic, payload, qos, retain, properties)
        connect_kwargs = {"keepalive": 30}
        if args.version == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            connect_kwargs["clean_start"] = clean
            if session_expiry is not None:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = session_expiry
                connect_kwargs["properties"] = properties
        self.client.connect(args.host, args.port, **connect_kwargs)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT_SECS):
            fail(f"{client_id}: no CONNACK")
        if self.connect_reason != 0:
            fail(f"{client_id}: CONNACK {self.connect_reason}")

    def _on_connect(self, _client, _userdata, flags, reason_code, _properties):
        self.session_present = bool(flags.session_present)
        self.connect_reason = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        self.connected.set()

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties):
        self.granted = [code.value for code in reason_codes]
        self.subscribed.set()

    def subscribe(self, topic, qos, properties=None):
        self.subscribed.clear()
        if properties is not None:
            self.client.subscribe(topic, qos, properties=properties)
        else:
            self.client.subscribe(topic, qos)
        if not self.subscribed.wait(TIMEOUT_SECS):
            fail(f"no SUBACK for {topic}")
        return self.granted

    def publish(self, topic, payload, qos, retain=False, properties=None):
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(TIMEOUT_SECS)
        if not info.is_published():
            fail(f"publish to {topic} not acknowledged")

    def receive(self, count):
        received = []
        for _ in range(count):
            try:
                received.append(self.messages.get(timeout=TIMEOUT_SECS))
            except queue.Empty:
                fail(f"received {len(received)} of {count} messages")
        return received

    def disconnect(self):
        self.client.disconnect()
        self.client.loop_stop()


def message_json(message):
    """Returns the fields of a received message the tests check."""
    result = {
        "topic": message.topic,
        "payload": message.payload.decode("utf-8", "replace"),
        "qos": message.qos,
        "retain": bool(message.retain),
    }
    properties = getattr(message, "properties", None)
    if properties is not None:
        props = {}
        for name in (
            "PayloadFormatIndicator",
            "MessageExpiryInterval",
            "ContentType",
            "ResponseTopic",
            "SubscriptionIdentifier",
        ):
            if hasattr(properties, name):
                props[name] = getattr(properties, name)
        if hasattr(properties, "CorrelationData"):
            props["CorrelationData"] = properties.CorrelationData.hex()
        if hasattr(properties, "UserProperty"):
            props["UserProperty"] = [list(pair) for pair in properties.UserProperty]
        result["properties"] = props
    return result


def emit(document):
    print(json.dumps(document))
    sys.stdout.flush()
