//! A raw MQTT client on `starling_core::codec`: sends exactly the packets (or bytes) a test
//! writes and reports exactly what the broker sends back, including the close of the socket.

use std::{net::SocketAddr, time::Duration};

use bytes::{Bytes, BytesMut};
use starling_core::codec::{
    decode_packet, Ack, AckProperties, ByteString, ConnAck, Connect, ConnectProperties, Disconnect,
    DisconnectProperties, Packet, PacketId, ProtocolVersion, Publish, PublishProperties, QoS,
    ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::PROMPTLY;

/// What the broker did next.
// Test-only and moved once per event: boxing the packet would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// It sent a packet.
    Packet(Packet),
    /// It closed the connection (EOF or reset).
    Closed,
    /// Nothing happened within the timeout.
    Timeout,
}

/// A test client that speaks MQTT through the core codec.
pub struct RawClient {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Version used to encode and decode packets after CONNECT.
    pub version: ProtocolVersion,
    next_packet_id: u16,
}

/// Returns a CONNECT with clean start, keep alive 0 and no properties.
pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: ByteString::from(client_id),
        last_will: None,
        username: None,
        password: None,
    }
}

/// Returns a PUBLISH without properties; `packet_id` 0 means none (QoS 0).
pub fn publish_packet(topic: &str, qos: QoS, packet_id: u16, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: PacketId::new(packet_id),
        properties: PublishProperties::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

/// Returns subscription options with only the maximum QoS set.
pub fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

fn ack(packet_id: PacketId) -> Ack {
    Ack {
        packet_id,
        reason_code: ReasonCode::Success,
        properties: AckProperties::default(),
    }
}

impl RawClient {
    /// Opens a TCP connection; nothing is sent yet.
    pub async fn open(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the broker");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawClient {
            stream,
            rbuf: BytesMut::new(),
            version: ProtocolVersion::V5,
            next_packet_id: 0,
        }
    }

    /// Sends `connect` and returns the CONNACK, whatever its reason code.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = RawClient::open(addr).await;
        client.version = connect.protocol;
        client.send(Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with clean start and asserts success.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> RawClient {
        let (client, connack) =
            RawClient::connect_with(addr, connect_packet(version, client_id)).await;
        assert_eq!(
            connack.reason_code,
            ReasonCode::Success,
            "CONNACK of {client_id}: {connack:?}"
        );
        client
    }

    /// Connects an MQTT 5.0 client with clean start and asserts success.
    pub async fn connect_v5(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect(addr, ProtocolVersion::V5, client_id).await
    }

    /// Connects an MQTT 3.1.1 client with clean session and asserts success.
    pub async fn connect_v311(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect(addr, ProtocolVersion::V3_1_1, client_id).await
    }

    /// Encodes and sends one packet.
    pub async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf);
        self.send_raw(&buf).await;
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the broker");
    }

    /// Returns the next event within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match decode_packet(&mut self.rbuf, usize::MAX, Some(self.version)) {
                Ok(Some(packet)) => return Event::Packet(packet),
                Ok(None) => {}
                Err(error) => panic!("the broker sent an undecodable packet: {error}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Err(_elapsed) => return Event::Timeout,
                Ok(Ok(0)) => {
                    assert!(
                        self.rbuf.is_empty(),
                        "connection closed inside a packet: {:?}",
                        &self.rbuf[..]
                    );
                    return Event::Closed;
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    // A reset is a close; the test decides whether a close was expected.
                    eprintln!("read error treated as close: {error}");
                    return Event::Closed;
                }
            }
        }
    }

    /// Returns the next packet; panics if the connection closes or nothing comes promptly.
    pub async fn recv(&mut self) -> Packet {
        match self.next_event(PROMPTLY).await {
            Event::Packet(packet) => packet,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Returns the next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Receives a PUBLISH and completes its QoS handshake (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub async fn recv_publish_and_ack(&mut self) -> Publish {
        let publish = self.recv_publish().await;
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, Some(packet_id)) => self.send(Packet::PubAck(ack(packet_id))).await,
            (QoS::ExactlyOnce, Some(packet_id)) => {
                self.send(Packet::PubRec(ack(packet_id))).await;
                match self.recv().await {
                    Packet::PubRel(pubrel) => assert_eq!(pubrel.packet_id, packet_id),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(Packet::PubComp(ack(packet_id))).await;
            }
            (qos, None) => panic!("PUBLISH at {qos:?} without a packet id"),
        }
        publish
    }

    /// Receives `count` PUBLISH packets, completing each one's QoS handshake, and returns
    /// their payloads as text, in order.
    pub async fn recv_payloads(&mut self, count: usize) -> Vec<String> {
        let mut payloads = Vec::with_capacity(count);
        for _ in 0..count {
            let publish = self.recv_publish_and_ack().await;
            payloads.push(String::from_utf8_lossy(&publish.payload).into_owned());
        }
        payloads
    }

    /// Sends PUBACK for `packet_id`.
    pub async fn puback(&mut self, packet_id: PacketId) {
        self.send(Packet::PubAck(ack(packet_id))).await;
    }

    /// Asserts that the broker sends nothing (and keeps the connection) for `duration`.
    pub async fn expect_nothing(&mut self, duration: Duration) {
        match self.next_event(duration).await {
            Event::Timeout => {}
            other => panic!("expected silence for {duration:?}, got {other:?}"),
        }
    }

    /// Asserts that the broker closes the connection promptly without sending anything.
    pub async fn expect_closed(&mut self) {
        match self.next_event(PROMPTLY).await {
            Event::Closed => {}
            other => panic!("expected the connection to be closed, got {other:?}"),
        }
    }

    /// Asserts that the next packet is DISCONNECT with `reason_code`, then that the broker
    /// closes the connection. Returns the DISCONNECT.
    pub async fn expect_disconnect(&mut self, reason_code: ReasonCode) -> Disconnect {
        let disconnect = match self.next_event(PROMPTLY).await {
            Event::Packet(Packet::Disconnect(disconnect)) => disconnect,
            other => panic!("expected DISCONNECT {reason_code:?}, got {other:?}"),
        };
        assert_eq!(disconnect.reason_code, reason_code, "{disconnect:?}");
        self.expect_closed().await;
        disconnect
    }

    /// Reads raw bytes until the broker closes the connection (within `PROMPTLY`).
    pub async fn read_until_closed(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.rbuf).to_vec();
        let result = tokio::time::timeout(PROMPTLY, self.stream.read_to_end(&mut bytes)).await;
        assert!(
            result.is_ok(),
            "connection still open after {PROMPTLY:?}; received {bytes:?}"
        );
        bytes
    }

    /// Returns a fresh packet identifier.
    pub fn next_packet_id(&mut self) -> PacketId {
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        PacketId::new(self.next_packet_id).expect("non-zero")
    }

    /// Subscribes to each filter with its options and an optional subscription identifier;
    /// returns the SUBACK reason codes.
    pub async fn subscribe_with(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        subscription_identifier: Option<u32>,
    ) -> Vec<ReasonCode> {
        let packet_id = self.next_packet_id();
        let subscribe = Subscribe {
            packet_id,
            properties: SubscribeProperties {
                subscription_identifier,
                user_properties: Vec::new(),
            },
            filters: filters
                .iter()
                .map(|(filter, options)| (ByteString::from(*filter), *options))
                .collect(),
        };
        self.send(Packet::Subscribe(subscribe)).await;
        match self.recv().await {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, packet_id);
                suback.reason_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes to one filter and asserts that `qos` is granted.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let reason_codes = self.subscribe_with(&[(filter, options(qos))], None).await;
        let granted = ReasonCode::from_u8(qos.as_u8()).expect("granted qos code");
        assert_eq!(reason_codes, vec![granted], "SUBACK for {filter}");
    }

    /// Publishes and completes the handshake of its QoS; returns the PUBACK/PUBREC reason code
    /// (Success for QoS 0).
    pub async fn publish_with(&mut self, mut publish: Publish) -> ReasonCode {
        if publish.qos != QoS::AtMostOnce && publish.packet_id.is_none() {
            publish.packet_id = Some(self.next_packet_id());
        }
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        self.send(Packet::Publish(publish)).await;
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => ReasonCode::Success,
            (QoS::AtLeastOnce, Some(packet_id)) => match self.recv().await {
                Packet::PubAck(puback) => {
                    assert_eq!(puback.packet_id, packet_id);
                    puback.reason_code
                }
                other => panic!("expected PUBACK, got {other:?}"),
            },
            (QoS::ExactlyOnce, Some(packet_id)) => {
                let pubrec = match self.recv().await {
                    Packet::PubRec(pubrec) => pubrec,
                    other => panic!("expected PUBREC, got {other:?}"),
                };
                assert_eq!(pubrec.packet_id, packet_id);
                if pubrec.reason_code.is_error() {
                    return pubrec.reason_code;
                }
                self.send(Packet::PubRel(ack(packet_id))).await;
                match self.recv().await {
                    Packet::PubComp(pubcomp) => assert_eq!(pubcomp.packet_id, packet_id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
                pubrec.reason_code
            }
            (_, None) => unreachable!("packet id assigned above"),
        }
    }

    /// Publishes `payload` to `topic` at `qos` and completes the handshake.
    pub async fn publish(&mut self, topic: &str, qos: QoS, payload: &[u8]) -> ReasonCode {
        self.publish_with(publish_packet(topic, qos, 0, payload))
            .await
    }

    /// Sends DISCONNECT with `reason_code` and waits until the broker closes the connection,
    /// so everything the broker does on this close (e.g. a will) has happened.
    pub async fn disconnect_with(mut self, reason_code: ReasonCode) {
        self.send(Packet::Disconnect(Disconnect {
            reason_code,
            properties: DisconnectProperties::default(),
        }))
        .await;
        self.expect_closed().await;
    }

    /// Sends a normal DISCONNECT and waits for the close.
    pub async fn disconnect(self) {
        self.disconnect_with(ReasonCode::NORMAL_DISCONNECTION).await;
    }
}

/// A client that keeps being served while others misbehave: a subscriber that must receive a
/// fresh message after every bad input.
pub struct Bystander {
    addr: SocketAddr,
    subscriber: RawClient,
    num_checks: u32,
}

impl Bystander {
    /// Topic the bystander listens on.
    pub const TOPIC: &'static str = "bystander/ping";

    /// Connects the bystander and subscribes it.
    pub async fn start(addr: SocketAddr) -> Bystander {
        let mut subscriber = RawClient::connect_v5(addr, "bystander-subscriber").await;
        subscriber
            .subscribe(Bystander::TOPIC, QoS::AtLeastOnce)
            .await;
        Bystander {
            addr,
            subscriber,
            num_checks: 0,
        }
    }

    /// Asserts that a new client can still publish and the bystander still receives.
    pub async fn assert_served(&mut self) {
        self.num_checks += 1;
        let payload = format!("ping {}", self.num_checks);
        let mut publisher = RawClient::connect_v5(
            self.addr,
            &format!("bystander-publisher-{}", self.num_checks),
        )
        .await;
        let reason_code = publisher
            .publish(Bystander::TOPIC, QoS::AtLeastOnce, payload.as_bytes())
            .await;
        assert_eq!(reason_code, ReasonCode::Success);
        let publish = self.subscriber.recv_publish_and_ack().await;
        assert_eq!(publish.payload, payload.as_bytes(), "bystander message");
        publisher.disconnect().await;
    }
}
