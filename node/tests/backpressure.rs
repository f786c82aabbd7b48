//! Backpressure: a QoS 1 flood towards a subscriber whose queue is full slows the publisher
//! (its PUBACKs are held back) instead of losing messages.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use starling_core::codec::{Packet, ProtocolVersion, QoS};
use support::{
    raw::{connect_packet, publish_packet},
    RawClient, TestBroker,
};

const NUM_MESSAGES: u16 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_flood_is_slowed_not_dropped_when_the_subscriber_queue_is_full() {
    // A tiny queue and a receive maximum of 1 on the subscriber force the queue to fill up.
    let broker = TestBroker::start_with("[mqtt]\nmax_queued_messages = 5\n").await;
    let mut connect = connect_packet(ProtocolVersion::V5, "slow-subscriber");
    connect.properties.receive_maximum = Some(1);
    let (mut subscriber, _) = RawClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("flood/topic", QoS::AtLeastOnce).await;

    let mut publisher = RawClient::connect_v5(broker.addr, "flooder").await;
    // Pipeline every PUBLISH without waiting for acknowledgements.
    for packet_id in 1..=NUM_MESSAGES {
        let payload = packet_id.to_be_bytes();
        let publish = publish_packet("flood/topic", QoS::AtLeastOnce, packet_id, &payload);
        publisher.send(Packet::Publish(publish)).await;
    }
    // The subscriber has not read anything yet: the publisher must not have all its PUBACKs.
    let mut num_acks = 0;
    while let support::raw::Event::Packet(Packet::PubAck(puback)) =
        publisher.next_event(Duration::from_millis(300)).await
    {
        num_acks += 1;
        assert_eq!(puback.packet_id.get(), num_acks, "PUBACK out of order");
    }
    assert!(
        num_acks < NUM_MESSAGES,
        "all {num_acks} PUBACKs arrived while the subscriber's queue was full"
    );

    // Now the subscriber reads slowly-but-steadily; every message arrives once, in order.
    for expected in 1..=NUM_MESSAGES {
        let publish = subscriber.recv_publish_and_ack().await;
        let received = u16::from_be_bytes([publish.payload[0], publish.payload[1]]);
        assert_eq!(received, expected, "messages out of order or lost");
    }
    // And the publisher eventually gets every acknowledgement, in order [MQTT-4.6.0-2].
    while num_acks < NUM_MESSAGES {
        match publisher.recv().await {
            Packet::PubAck(puback) => {
                num_acks += 1;
                assert_eq!(puback.packet_id.get(), num_acks, "PUBACK out of order");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    broker.shutdown().await;
}
