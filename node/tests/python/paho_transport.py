"""Publishes and subscribes through one listener with a given paho transport (tcp or
websockets), with or without TLS, at QoS 0, 1 and 2, plus a payload larger than a TLS record
and a WebSocket frame of the broker.

Prints {"received": [{"topic", "qos", "size", "checksum"}, ...]} in publish order.
"""

import hashlib

from mqtt_common import Client, emit, parse_args

args = parse_args(
    {
        "--transport": {"choices": ["tcp", "websockets"], "default": "tcp"},
        "--ws-path": {"default": "/mqtt"},
        "--cafile": {"default": None},
        "--certfile": {"default": None},
        "--keyfile": {"default": None},
        "--topic": {"default": "transport"},
    }
)

subscriber = Client(args, f"{args.topic}-sub")
subscriber.subscribe(f"{args.topic}/#", 2)
publisher = Client(args, f"{args.topic}-pub")
payloads = [
    (f"{args.topic}/q0", b"qos 0", 0),
    (f"{args.topic}/q1", b"qos 1", 1),
    (f"{args.topic}/q2", b"qos 2", 2),
    (f"{args.topic}/large", bytes(i % 251 for i in range(300_000)), 1),
]
for topic, payload, qos in payloads:
    publisher.publish(topic, payload, qos)
received = subscriber.receive(len(payloads))
emit(
    {
        "received": [
            {
                "topic": message.topic,
                "qos": message.qos,
                "size": len(message.payload),
                "checksum": hashlib.sha256(message.payload).hexdigest(),
            }
            for message in received
        ],
        "expected": [
            {
                "topic": topic,
                "qos": qos,
                "size": len(payload),
                "checksum": hashlib.sha256(payload).hexdigest(),
            }
            for topic, payload, qos in payloads
        ],
    }
)
publisher.disconnect()
subscriber.disconnect()
