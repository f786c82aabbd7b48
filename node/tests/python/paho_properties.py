"""MQTT 5.0 properties with paho-mqtt: a PUBLISH with every application property goes through
a subscription with identifier 42; prints the received message with its properties.
"""

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_common import Client, emit, message_json, parse_args

args = parse_args()
subscriber = Client(args, "paho-props-sub")
subscribe_properties = Properties(PacketTypes.SUBSCRIBE)
subscribe_properties.SubscriptionIdentifier = 42
subscriber.subscribe("pahoprops/t", 1, subscribe_properties)

publisher = Client(args, "paho-props-pub")
properties = Properties(PacketTypes.PUBLISH)
properties.PayloadFormatIndicator = 1
properties.MessageExpiryInterval = 300
properties.ContentType = "application/json"
properties.ResponseTopic = "pahoprops/reply"
properties.CorrelationData = b"\x01\x02request-7"
properties.UserProperty = ("b", "1")
properties.UserProperty = ("a", "2")
properties.UserProperty = ("b", "3")
publisher.publish("pahoprops/t", '{"x": 1}', 1, properties=properties)
received = subscriber.receive(1)[0]
subscriber.disconnect()
publisher.disconnect()
emit(message_json(received))
