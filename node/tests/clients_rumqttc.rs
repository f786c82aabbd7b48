//! Interoperability with rumqttc, the Rust client, in MQTT 3.1.1 (`rumqttc`) and MQTT 5.0
//! (`rumqttc::v5`): QoS 0/1/2 end to end, persistent sessions, retained messages, wills and
//! properties.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{TestBroker, PROMPTLY};
use tokio::{sync::mpsc, task::JoinHandle};

/// Runs a v4 event loop until its connection fails, forwarding every incoming packet.
fn drive_v4(
    mut eventloop: rumqttc::EventLoop,
) -> (mpsc::Receiver<rumqttc::Packet>, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(1024);
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(packet) = event {
                if sender.send(packet).await.is_err() {
                    return;
                }
            }
        }
    });
    (receiver, task)
}

/// Runs a v5 event loop until its connection fails, forwarding every incoming packet.
fn drive_v5(
    mut eventloop: rumqttc::v5::EventLoop,
) -> (mpsc::Receiver<rumqttc::v5::Incoming>, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(1024);
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::v5::Event::Incoming(packet) = event {
                if sender.send(packet).await.is_err() {
                    return;
                }
            }
        }
    });
    (receiver, task)
}

/// Returns the first forwarded packet `select` accepts, skipping the others.
async fn next_packet<P: std::fmt::Debug, T>(
    receiver: &mut mpsc::Receiver<P>,
    what: &str,
    mut select: impl FnMut(P) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(packet)) => {
                if let Some(selected) = select(packet) {
                    return selected;
                }
            }
            Ok(None) => panic!("connection ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn options_v4(client_id: &str, broker: &TestBroker) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

fn options_v5(client_id: &str, broker: &TestBroker) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

mod v4 {
    use rumqttc::{AsyncClient, LastWill, Packet, QoS};

    use super::*;

    async fn connect(
        options: rumqttc::MqttOptions,
    ) -> (AsyncClient, mpsc::Receiver<Packet>, JoinHandle<()>, bool) {
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (mut receiver, task) = drive_v4(eventloop);
        let session_present = next_packet(&mut receiver, "CONNACK", |packet| match packet {
            Packet::ConnAck(connack) => {
                assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
                Some(connack.session_present)
            }
            _ => None,
        })
        .await;
        (client, receiver, task, session_present)
    }

    async fn subscribe(client: &AsyncClient, receiver: &mut mpsc::Receiver<Packet>, filter: &str) {
        client.subscribe(filter, QoS::ExactlyOnce).await.unwrap();
        next_packet(receiver, "SUBACK", |packet| match packet {
            Packet::SubAck(suback) => Some(suback),
            _ => None,
        })
        .await;
    }

    async fn next_publish(receiver: &mut mpsc::Receiver<Packet>) -> rumqttc::Publish {
        next_packet(receiver, "PUBLISH", |packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qos_0_1_2_end_to_end() {
        let broker = TestBroker::start().await;
        let (subscriber, mut sub_rx, _sub_task, _) =
            connect(options_v4("rumqttc4-sub", &broker)).await;
        subscribe(&subscriber, &mut sub_rx, "rq4/#").await;
        let (publisher, mut pub_rx, _pub_task, _) =
            connect(options_v4("rumqttc4-pub", &broker)).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("rq4/q{}", qos as u8);
            publisher
                .publish(&topic, qos, false, format!("payload {}", qos as u8))
                .await
                .unwrap();
        }
        // The publisher's handshakes complete: PUBACK for QoS 1, PUBCOMP for QoS 2.
        next_packet(&mut pub_rx, "PUBACK", |packet| {
            matches!(packet, Packet::PubAck(_)).then_some(())
        })
        .await;
        next_packet(&mut pub_rx, "PUBCOMP", |packet| {
            matches!(packet, Packet::PubComp(_)).then_some(())
        })
        .await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let publish = next_publish(&mut sub_rx).await;
            assert_eq!(publish.topic, format!("rq4/q{}", qos as u8));
            assert_eq!(publish.qos, qos);
            assert_eq!(publish.payload, format!("payload {}", qos as u8).as_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_session_receives_messages_queued_while_offline() {
        let broker = TestBroker::start().await;
        let mut options = options_v4("rumqttc4-persistent", &broker);
        options.set_clean_session(false);
        let (subscriber, mut sub_rx, sub_task, session_present) = connect(options.clone()).await;
        assert!(!session_present);
        subscribe(&subscriber, &mut sub_rx, "persist4/t").await;
        subscriber.disconnect().await.unwrap();
        sub_task.await.unwrap();

        let (publisher, mut pub_rx, _pub_task, _) =
            connect(options_v4("rumqttc4-persistent-pub", &broker)).await;
        for idx in 0..3 {
            publisher
                .publish("persist4/t", QoS::AtLeastOnce, false, format!("m{idx}"))
                .await
                .unwrap();
            next_packet(&mut pub_rx, "PUBACK", |packet| {
                matches!(packet, Packet::PubAck(_)).then_some(())
            })
            .await;
        }

        let (_subscriber, mut sub_rx, _sub_task, session_present) = connect(options).await;
        assert!(session_present);
        for idx in 0..3 {
            let publish = next_publish(&mut sub_rx).await;
            assert_eq!(publish.payload, format!("m{idx}").as_bytes());
            assert_eq!(publish.qos, QoS::AtLeastOnce);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn will_and_retained_message() {
        let broker = TestBroker::start().await;
        let (watcher, mut watch_rx, _watch_task, _) =
            connect(options_v4("rumqttc4-watcher", &broker)).await;
        subscribe(&watcher, &mut watch_rx, "status4/+").await;

        let mut options = options_v4("rumqttc4-mortal", &broker);
        options.set_last_will(LastWill::new(
            "status4/mortal",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (_mortal, _mortal_rx, mortal_task, _) = connect(options).await;
        // Abort the event loop: its socket is dropped without DISCONNECT.
        mortal_task.abort();
        let will = next_publish(&mut watch_rx).await;
        assert_eq!(will.topic, "status4/mortal");
        assert_eq!(will.payload, &b"offline"[..]);

        // The will was retained: a later subscriber gets it with RETAIN set.
        let (late, mut late_rx, _late_task, _) =
            connect(options_v4("rumqttc4-late", &broker)).await;
        subscribe(&late, &mut late_rx, "status4/mortal").await;
        let retained = next_publish(&mut late_rx).await;
        assert!(retained.retain);
        assert_eq!(retained.payload, &b"offline"[..]);
    }
}

mod v5 {
    use bytes::Bytes;
    use rumqttc::v5::{
        mqttbytes::{
            v5::{
                ConnectReturnCode, LastWill, LastWillProperties, Packet, Publish, PublishProperties,
            },
            QoS,
        },
        AsyncClient, Incoming,
    };

    use super::*;

    async fn connect(
        options: rumqttc::v5::MqttOptions,
    ) -> (AsyncClient, mpsc::Receiver<Incoming>, JoinHandle<()>) {
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (mut receiver, task) = drive_v5(eventloop);
        next_packet(&mut receiver, "CONNACK", |packet| match packet {
            Packet::ConnAck(connack) => {
                assert_eq!(connack.code, ConnectReturnCode::Success);
                Some(())
            }
            _ => None,
        })
        .await;
        (client, receiver, task)
    }

    async fn subscribe(
        client: &AsyncClient,
        receiver: &mut mpsc::Receiver<Incoming>,
        filter: &str,
    ) {
        client.subscribe(filter, QoS::ExactlyOnce).await.unwrap();
        next_packet(receiver, "SUBACK", |packet| match packet {
            Packet::SubAck(suback) => Some(suback),
            _ => None,
        })
        .await;
    }

    async fn next_publish(receiver: &mut mpsc::Receiver<Incoming>) -> Publish {
        next_packet(receiver, "PUBLISH", |packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qos_0_1_2_end_to_end() {
        let broker = TestBroker::start().await;
        let (subscriber, mut sub_rx, _sub_task) =
            connect(options_v5("rumqttc5-sub", &broker)).await;
        subscribe(&subscriber, &mut sub_rx, "rq5/#").await;
        let (publisher, mut pub_rx, _pub_task) = connect(options_v5("rumqttc5-pub", &broker)).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("rq5/q{}", qos as u8);
            publisher
                .publish(&topic, qos, false, format!("payload {}", qos as u8))
                .await
                .unwrap();
        }
        next_packet(&mut pub_rx, "PUBACK", |packet| {
            matches!(packet, Packet::PubAck(_)).then_some(())
        })
        .await;
        next_packet(&mut pub_rx, "PUBCOMP", |packet| {
            matches!(packet, Packet::PubComp(_)).then_some(())
        })
        .await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let publish = next_publish(&mut sub_rx).await;
            assert_eq!(publish.topic, format!("rq5/q{}", qos as u8).as_bytes());
            assert_eq!(publish.qos, qos);
            assert_eq!(publish.payload, format!("payload {}", qos as u8).as_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn properties_are_forwarded() {
        let broker = TestBroker::start().await;
        let (subscriber, mut sub_rx, _sub_task) =
            connect(options_v5("rumqttc5-props-sub", &broker)).await;
        subscribe(&subscriber, &mut sub_rx, "props5/t").await;
        let (publisher, _pub_rx, _pub_task) =
            connect(options_v5("rumqttc5-props-pub", &broker)).await;
        let properties = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(600),
            content_type: Some("text/plain".to_string()),
            response_topic: Some("props5/reply".to_string()),
            correlation_data: Some(Bytes::from_static(b"42")),
            user_properties: vec![
                ("z".to_string(), "1".to_string()),
                ("a".to_string(), "2".to_string()),
            ],
            ..PublishProperties::default()
        };
        publisher
            .publish_with_properties(
                "props5/t",
                QoS::AtLeastOnce,
                false,
                "hi",
                properties.clone(),
            )
            .await
            .unwrap();
        let publish = next_publish(&mut sub_rx).await;
        let received = publish.properties.expect("properties");
        assert_eq!(received.payload_format_indicator, Some(1));
        assert!(matches!(received.message_expiry_interval, Some(599..=600)));
        assert_eq!(received.content_type, properties.content_type);
        assert_eq!(received.response_topic, properties.response_topic);
        assert_eq!(received.correlation_data, properties.correlation_data);
        assert_eq!(received.user_properties, properties.user_properties);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn will_is_published_when_the_client_vanishes() {
        let broker = TestBroker::start().await;
        let (watcher, mut watch_rx, _watch_task) =
            connect(options_v5("rumqttc5-watcher", &broker)).await;
        subscribe(&watcher, &mut watch_rx, "status5/+").await;
        let mut options = options_v5("rumqttc5-mortal", &broker);
        options.set_last_will(LastWill::new(
            "status5/mortal",
            "gone",
            QoS::AtLeastOnce,
            false,
            Some(LastWillProperties {
                delay_interval: None,
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: vec![("why".to_string(), "crash".to_string())],
            }),
        ));
        let (_mortal, _mortal_rx, mortal_task) = connect(options).await;
        mortal_task.abort();
        let will = next_publish(&mut watch_rx).await;
        assert_eq!(will.topic, &b"status5/mortal"[..]);
        assert_eq!(will.payload, &b"gone"[..]);
        assert_eq!(
            will.properties.expect("will properties").user_properties,
            vec![("why".to_string(), "crash".to_string())]
        );
    }
}
