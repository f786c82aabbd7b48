"""QoS 0, 1 and 2 end to end, plus a retained message, with paho-mqtt in MQTT 3.1.1 or 5.0.

Prints {"live": [...], "retained": [...]}: the live messages in arrival order and what a
later subscriber gets from the retained store.
"""

from mqtt_common import Client, emit, message_json, parse_args

args = parse_args()
prefix = f"paho{args.version}"
subscriber = Client(args, f"{prefix}-sub")
subscriber.subscribe(f"{prefix}/#", 2)
publisher = Client(args, f"{prefix}-pub")
for qos in (0, 1, 2):
    publisher.publish(f"{prefix}/q{qos}", f"payload {qos}", qos)
live = [message_json(message) for message in subscriber.receive(3)]

publisher.publish(f"{prefix}/retained", "kept", 1, retain=True)
subscriber.receive(1)
late = Client(args, f"{prefix}-late")
late.subscribe(f"{prefix}/retained", 1)
retained = [message_json(message) for message in late.receive(1)]
for client in (subscriber, publisher, late):
    client.disconnect()
emit({"live": live, "retained": retained})
