//! One connection of a rumqttc subscriber (MQTT 5 or 3.1.1) with a persistent session and
//! manual acks: a delivery is recorded first, acknowledged after. A new event loop per
//! connection, so nothing rumqttc buffered for the previous broker is replayed.
//!
//! One loop ([`run`]) serves both protocol versions; [`Flavour`] is what differs between
//! rumqttc's two client APIs.

use std::time::Duration;

use super::clients::{CycleControl, Ended, Subscriber, SESSION_EXPIRY_SECS};
use starling_core::codec::QoS;

/// Capacity of the request channel between the client handle and its event loop.
const REQUEST_CAPACITY: usize = 4096;

/// An incoming event as the loop needs it.
pub(crate) enum Incoming<P> {
    ConnAck {
        session_present: bool,
    },
    /// `text` describes a refused SUBACK.
    SubAck {
        granted: bool,
        text: String,
    },
    Publish(P),
    Other,
}

/// Converts a polled event; the caller brings the API's `Event`, `Packet` and
/// `SubscribeReasonCode` into scope (the two APIs' types differ, their shapes don't).
macro_rules! incoming {
    ($polled:expr) => {
        Ok(match $polled.map_err(drop)? {
            Event::Incoming(Packet::ConnAck(connack)) => Incoming::ConnAck {
                session_present: connack.session_present,
            },
            Event::Incoming(Packet::SubAck(suback)) => Incoming::SubAck {
                granted: suback
                    .return_codes
                    .iter()
                    .all(|code| matches!(code, SubscribeReasonCode::Success(_))),
                text: format!("{suback:?}"),
            },
            Event::Incoming(Packet::Publish(publish)) => Incoming::Publish(publish),
            _ => Incoming::Other,
        })
    };
}

/// Queues a SUBSCRIBE at the API's QoS (`MqttQoS`, brought into scope by the caller).
macro_rules! subscribe {
    ($client:expr, $filter:expr, $qos:expr) => {{
        let qos = match $qos {
            QoS::AtMostOnce => MqttQoS::AtMostOnce,
            QoS::AtLeastOnce => MqttQoS::AtLeastOnce,
            QoS::ExactlyOnce => MqttQoS::ExactlyOnce,
        };
        $client.try_subscribe($filter, qos).is_ok()
    }};
}

/// One of rumqttc's client APIs.
pub(crate) trait Flavour {
    type Client;
    type EventLoop;
    type Publish;

    /// Creates the client of one connection: a clean start only before the first SUBACK.
    fn start(
        subscriber: &Subscriber,
        control: &CycleControl,
        subscribed: bool,
    ) -> (Self::Client, Self::EventLoop);
    /// Polls the event loop; `Err` when the connection ended.
    async fn poll(eventloop: &mut Self::EventLoop) -> Result<Incoming<Self::Publish>, ()>;
    /// Queues a SUBSCRIBE; false if the client is gone.
    fn subscribe(client: &Self::Client, filter: &str, qos: QoS) -> bool;
    /// Returns a delivery's topic and payload.
    fn topic_and_payload(publish: &Self::Publish) -> (&[u8], &[u8]);
    /// Queues the acknowledgement of a delivery; false if the client is gone.
    fn ack(client: &Self::Client, publish: &Self::Publish) -> bool;
    /// Queues a DISCONNECT.
    fn disconnect(client: &Self::Client);
}

/// rumqttc's MQTT 5 client.
pub(crate) struct V5;

impl Flavour for V5 {
    type Client = rumqttc::v5::AsyncClient;
    type EventLoop = rumqttc::v5::EventLoop;
    type Publish = rumqttc::v5::mqttbytes::v5::Publish;

    fn start(
        subscriber: &Subscriber,
        control: &CycleControl,
        subscribed: bool,
    ) -> (Self::Client, Self::EventLoop) {
        let mut options = rumqttc::v5::MqttOptions::new(
            subscriber.client_id.clone(),
            control.addr.ip().to_string(),
            control.addr.port(),
        );
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(!subscribed)
            .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
            .set_manual_acks(true);
        rumqttc::v5::AsyncClient::new(options, REQUEST_CAPACITY)
    }

    async fn poll(eventloop: &mut Self::EventLoop) -> Result<Incoming<Self::Publish>, ()> {
        use rumqttc::v5::{
            mqttbytes::v5::{Packet, SubscribeReasonCode},
            Event,
        };
        incoming!(eventloop.poll().await)
    }

    fn subscribe(client: &Self::Client, filter: &str, qos: QoS) -> bool {
        use rumqttc::v5::mqttbytes::QoS as MqttQoS;
        subscribe!(client, filter, qos)
    }

    fn topic_and_payload(publish: &Self::Publish) -> (&[u8], &[u8]) {
        (&publish.topic, &publish.payload)
    }

    fn ack(client: &Self::Client, publish: &Self::Publish) -> bool {
        client.try_ack(publish).is_ok()
    }

    fn disconnect(client: &Self::Client) {
        let _ = client.try_disconnect();
    }
}

/// rumqttc's MQTT 3.1.1 client.
pub(crate) struct V4;

impl Flavour for V4 {
    type Client = rumqttc::AsyncClient;
    type EventLoop = rumqttc::EventLoop;
    type Publish = rumqttc::Publish;

    fn start(
        subscriber: &Subscriber,
        control: &CycleControl,
        _subscribed: bool,
    ) -> (Self::Client, Self::EventLoop) {
        let mut options = rumqttc::MqttOptions::new(
            subscriber.client_id.clone(),
            control.addr.ip().to_string(),
            control.addr.port(),
        );
        options
            .set_keep_alive(Duration::from_secs(30))
            // MQTT 3.1.1 has no clean start: the first connection subscribes into a fresh
            // persistent session, and the data directory is new, so there is nothing to clean.
            .set_clean_session(false)
            .set_manual_acks(true);
        rumqttc::AsyncClient::new(options, REQUEST_CAPACITY)
    }

    async fn poll(eventloop: &mut Self::EventLoop) -> Result<Incoming<Self::Publish>, ()> {
        use rumqttc::{Event, Packet, SubscribeReasonCode};
        incoming!(eventloop.poll().await)
    }

    fn subscribe(client: &Self::Client, filter: &str, qos: QoS) -> bool {
        use rumqttc::QoS as MqttQoS;
        subscribe!(client, filter, qos)
    }

    fn topic_and_payload(publish: &Self::Publish) -> (&[u8], &[u8]) {
        (publish.topic.as_bytes(), &publish.payload)
    }

    fn ack(client: &Self::Client, publish: &Self::Publish) -> bool {
        client.try_ack(publish).is_ok()
    }

    fn disconnect(client: &Self::Client) {
        let _ = client.try_disconnect();
    }
}

/// Runs one rumqttc connection of `subscriber` with the client API `F`.
pub(crate) async fn run<F: Flavour>(subscriber: &Subscriber, control: CycleControl) -> Ended {
    let subscribed = subscriber.log.lock().expect("lock").subscribed;
    let (client, mut eventloop) = F::start(subscriber, &control, subscribed);
    let mut num_subacks = 0;
    loop {
        let incoming = tokio::select! {
            biased;
            () = control.abort.cancelled() => return Ended::Aborted,
            () = control.finish.cancelled() => {
                F::disconnect(&client);
                let _ = tokio::time::timeout(Duration::from_secs(2), F::poll(&mut eventloop)).await;
                return Ended::Done;
            }
            incoming = F::poll(&mut eventloop) => match incoming {
                Ok(incoming) => incoming,
                Err(()) => return Ended::ConnectionLost,
            },
        };
        match incoming {
            Incoming::ConnAck { session_present } => {
                subscriber.rumqttc_connack(control.cycle, session_present);
                if !subscribed {
                    for (filter, qos) in &subscriber.filters {
                        if !F::subscribe(&client, filter, *qos) {
                            return Ended::ConnectionLost;
                        }
                    }
                }
            }
            Incoming::SubAck { granted, text } => {
                num_subacks += 1;
                let mut log = subscriber.log.lock().expect("lock");
                if !granted {
                    let anomaly = format!("{} SUBACK {text}", subscriber.client_id);
                    log.anomalies.push(anomaly);
                } else if num_subacks == subscriber.filters.len() {
                    log.subscribed = true;
                }
            }
            Incoming::Publish(publish) => {
                let (topic, payload) = F::topic_and_payload(&publish);
                subscriber.record_rumqttc(topic, payload);
                if !F::ack(&client, &publish) {
                    return Ended::ConnectionLost;
                }
            }
            Incoming::Other => {}
        }
    }
}
