"""Connects with a will on --topic, prints "connected" once the broker accepted it, then waits
to be killed: the test kills the process so the connection drops without DISCONNECT.
"""

import time

from mqtt_common import Client, parse_args

args = parse_args({"--topic": {"required": True}})
properties = None
if args.version == "5":
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.WILLMESSAGE)
    properties.UserProperty = ("reason", "killed")
client = Client(args, f"paho-will-{args.version}", will=(args.topic, "paho died", 1, False, properties))
print("connected", flush=True)
time.sleep(60)
