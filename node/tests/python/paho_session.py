"""A persistent session with paho-mqtt: subscribe, disconnect, messages published meanwhile,
reconnect without clean start. Prints the session-present flags and what was received.
"""

from mqtt_common import Client, emit, message_json, parse_args

args = parse_args()
client_id = f"paho-session-{args.version}"
first = Client(args, client_id, clean=True if args.version == "5" else False, session_expiry=60)
first.subscribe("pahosession/t", 1)
first.disconnect()

publisher = Client(args, f"paho-session-pub-{args.version}")
for idx in range(3):
    publisher.publish("pahosession/t", f"queued {idx}", 1)
publisher.disconnect()

second = Client(args, client_id, clean=False, session_expiry=60)
received = [message_json(message) for message in second.receive(3)]
second.disconnect()
emit({"first_present": first.session_present, "second_present": second.session_present, "received": received})
