//! One connection of a rumqttc subscriber (MQTT 5 or 3.1.1) with a persistent session and
//! manual acks: a delivery is recorded first, acknowledged after. A new event loop per
//! connection, so nothing rumqttc buffered for the previous broker is replayed.

use std::time::Duration;

use super::clients::{CycleControl, Ended, Subscriber, SESSION_EXPIRY_SECS};
use starling_core::codec::QoS;

/// Capacity of the request channel between the client handle and its event loop.
const REQUEST_CAPACITY: usize = 4096;

fn qos_v5(qos: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos_v4(qos: QoS) -> rumqttc::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// Runs one rumqttc MQTT 5 connection.
pub(crate) async fn run_v5(subscriber: &Subscriber, control: CycleControl) -> Ended {
    use rumqttc::v5::{mqttbytes::v5::Packet, AsyncClient, Event, MqttOptions};
    let subscribed = subscriber.log.lock().expect("lock").subscribed;
    let mut options = MqttOptions::new(
        subscriber.client_id.clone(),
        control.addr.ip().to_string(),
        control.addr.port(),
    );
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(!subscribed)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
        .set_manual_acks(true);
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut num_subacks = 0;
    loop {
        let event = tokio::select! {
            biased;
            () = control.abort.cancelled() => return Ended::Aborted,
            () = control.finish.cancelled() => {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
                return Ended::Done;
            }
            event = eventloop.poll() => match event {
                Ok(event) => event,
                Err(_) => return Ended::ConnectionLost,
            },
        };
        match event {
            Event::Incoming(Packet::ConnAck(connack)) => {
                subscriber.rumqttc_connack(control.cycle, connack.session_present);
                if !subscribed {
                    for (filter, qos) in &subscriber.filters {
                        if client.try_subscribe(filter.clone(), qos_v5(*qos)).is_err() {
                            return Ended::ConnectionLost;
                        }
                    }
                }
            }
            Event::Incoming(Packet::SubAck(suback)) => {
                num_subacks += 1;
                let granted = suback.return_codes.iter().all(|code| {
                    matches!(
                        code,
                        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                    )
                });
                let mut log = subscriber.log.lock().expect("lock");
                if !granted {
                    let anomaly = format!("{} SUBACK {suback:?}", subscriber.client_id);
                    log.anomalies.push(anomaly);
                } else if num_subacks == subscriber.filters.len() {
                    log.subscribed = true;
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                subscriber.record_rumqttc(&publish.topic, &publish.payload);
                if client.try_ack(&publish).is_err() {
                    return Ended::ConnectionLost;
                }
            }
            _ => {}
        }
    }
}

/// Runs one rumqttc MQTT 3.1.1 connection (clean session false).
pub(crate) async fn run_v4(subscriber: &Subscriber, control: CycleControl) -> Ended {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let subscribed = subscriber.log.lock().expect("lock").subscribed;
    let mut options = MqttOptions::new(
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
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut num_subacks = 0;
    loop {
        let event = tokio::select! {
            biased;
            () = control.abort.cancelled() => return Ended::Aborted,
            () = control.finish.cancelled() => {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
                return Ended::Done;
            }
            event = eventloop.poll() => match event {
                Ok(event) => event,
                Err(_) => return Ended::ConnectionLost,
            },
        };
        match event {
            Event::Incoming(Packet::ConnAck(connack)) => {
                subscriber.rumqttc_connack(control.cycle, connack.session_present);
                if !subscribed {
                    for (filter, qos) in &subscriber.filters {
                        if client.try_subscribe(filter.clone(), qos_v4(*qos)).is_err() {
                            return Ended::ConnectionLost;
                        }
                    }
                }
            }
            Event::Incoming(Packet::SubAck(suback)) => {
                num_subacks += 1;
                let granted = suback
                    .return_codes
                    .iter()
                    .all(|code| matches!(code, rumqttc::SubscribeReasonCode::Success(_)));
                let mut log = subscriber.log.lock().expect("lock");
                if !granted {
                    let anomaly = format!("{} SUBACK {suback:?}", subscriber.client_id);
                    log.anomalies.push(anomaly);
                } else if num_subacks == subscriber.filters.len() {
                    log.subscribed = true;
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                subscriber.record_rumqttc(publish.topic.as_bytes(), &publish.payload);
                if client.try_ack(&publish).is_err() {
                    return Ended::ConnectionLost;
                }
            }
            _ => {}
        }
    }
}
