//! Channels between glommio executors: ordering, exactly-once delivery, events in order
//! with data, end of partition, credit bounds and backpressure, floating credits, and
//! peers that go away.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::timer::sleep;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use rheon_net::{
    BufferBuilder, ChannelConfig, ChannelId, ConnectionManager, Envelope, Event, InputGate,
    LocalBufferPool, NetError, OutputChannel, SegmentPool,
};

/// Small io_memory: the test machine's memlock limit is 8 MiB and up to 4 executors run.
const IO_MEMORY_BYTES: usize = 256 << 10;
const SEGMENT_SIZE_BYTES: usize = 1024;

fn on_core<G, F, T>(core: usize, name: &str, f: G) -> ExecutorJoinHandle<T>
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Fixed(core))
        .name(name)
        .io_memory(IO_MEMORY_BYTES)
        .spawn(f)
        .expect("spawn executor")
}

fn id(producer: u32, consumer: u32) -> ChannelId {
    ChannelId {
        attempt: 0,
        edge: 7,
        producer,
        consumer,
    }
}

/// Record: (producer, consumer, seq, padding whose length varies with seq).
type Rec = (u32, u32, u64, String);

fn rec(p: u32, c: u32, seq: u64) -> Rec {
    (p, c, seq, "p".repeat((seq % 37) as usize))
}

/// Sends `records` numbered records on `out`, a watermark every 5 buffers carrying the
/// next sequence number, then EndOfPartition.
async fn produce(out: &OutputChannel, pool: &LocalBufferPool, p: u32, c: u32, records: u64) {
    let mut b = BufferBuilder::new(pool.take().await);
    let mut buffers = 0u64;
    for seq in 0..records {
        let r = rec(p, c, seq);
        if !b.try_append(&r).unwrap() {
            out.send_buffer(b.finish());
            buffers += 1;
            if buffers % 5 == 0 {
                out.send_event(Event::Watermark(seq as i64));
            }
            b = BufferBuilder::new(pool.take().await);
            assert!(b.try_append(&r).unwrap());
        }
    }
    if !b.is_empty() {
        out.send_buffer(b.finish());
    } else {
        pool.recycle(b.into_segment());
    }
    out.send_event(Event::EndOfPartition);
    out.drained().await.expect("drained");
}

/// Reads the gate to the end, checking per-channel order, exactly-once delivery and that
/// every watermark comes after all records before it. Returns records per channel.
async fn consume(gate: &InputGate, c: u32) -> Vec<u64> {
    let mut next_seq = vec![0u64; gate.num_channels()];
    let mut eop = vec![false; gate.num_channels()];
    while let Some((ch, env)) = gate.next().await.expect("no peer lost") {
        assert!(!eop[ch], "envelope after EndOfPartition on channel {ch}");
        match env {
            Envelope::Data { buffer, .. } => {
                for r in buffer.decode_records::<Rec>() {
                    let (p, rc, seq, pad) = r.expect("decodes");
                    assert_eq!(gate.channel_id(ch).producer, p, "record on wrong channel");
                    assert_eq!(rc, c);
                    assert_eq!(seq, next_seq[ch], "channel {ch}: out of order or duplicate");
                    assert_eq!(pad.len(), (seq % 37) as usize);
                    next_seq[ch] += 1;
                }
                gate.release(ch, buffer);
            }
            Envelope::Event(Event::Watermark(w)) => {
                assert_eq!(w as u64, next_seq[ch], "watermark overtook data on {ch}");
            }
            Envelope::Event(Event::EndOfPartition) => eop[ch] = true,
            Envelope::Event(e) => panic!("unexpected event {e:?}"),
        }
    }
    assert!(eop.iter().all(|e| *e));
    assert!(gate.is_finished());
    next_seq
}

/// Producers and consumers each on their own executor (placed on the given cores),
/// all-to-all; every channel carries `records` records.
fn run_all_to_all(producer_cores: &[usize], consumer_cores: &[usize], records: u64) {
    let config = ChannelConfig::default();
    let manager = ConnectionManager::new(config.clone());
    let consumers = consumer_cores.len() as u32;
    let producers = producer_cores.len() as u32;
    let mut handles = Vec::new();
    for (p, &core) in producer_cores.iter().enumerate() {
        let eps: Vec<_> = (0..consumers)
            .map(|c| manager.output_endpoint(id(p as u32, c)))
            .collect();
        handles.push(on_core(
            core,
            &format!("producer-{p}"),
            move || async move {
                let segments = SegmentPool::new(SEGMENT_SIZE_BYTES, 16 * eps.len());
                let mut tasks = Vec::new();
                for (c, ep) in eps.into_iter().enumerate() {
                    let pool = segments.reserve(6).unwrap();
                    let out = ep.open(pool.clone());
                    tasks.push(glommio::spawn_local(async move {
                        produce(&out, &pool, p as u32, c as u32, records).await;
                    }));
                }
                for t in tasks {
                    t.await;
                }
                0u64
            },
        ));
    }
    for (c, &core) in consumer_cores.iter().enumerate() {
        let eps: Vec<_> = (0..producers)
            .map(|p| manager.input_endpoint(id(p, c as u32)))
            .collect();
        let config = config.clone();
        handles.push(on_core(
            core,
            &format!("consumer-{c}"),
            move || async move {
                let gate = InputGate::open(eps, &config);
                let counts = consume(&gate, c as u32).await;
                assert!(counts.iter().all(|n| *n == records), "{counts:?}");
                counts.iter().sum::<u64>()
            },
        ));
    }
    let received: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(received, records * u64::from(producers * consumers));
    assert_eq!(manager.parked_count(), 0);
}

#[test]
fn three_producer_channels_into_one_gate_across_two_cores() {
    // One producer executor on core 0 with three output channels... modelled as three
    // producer subtasks on core 0 feeding one consumer on core 1.
    run_all_to_all(&[0, 0, 0], &[1], 5_000);
}

#[test]
fn four_executors_on_two_cores_all_to_all() {
    run_all_to_all(&[0, 1], &[0, 1], 3_000);
}

#[test]
fn producer_and_consumer_on_the_same_executor() {
    let manager = ConnectionManager::new(ChannelConfig::default());
    let out_ep = manager.output_endpoint(id(0, 0));
    let in_ep = manager.input_endpoint(id(0, 0));
    on_core(0, "both", move || async move {
        let segments = SegmentPool::new(SEGMENT_SIZE_BYTES, 8);
        let pool = segments.reserve(4).unwrap();
        let out = out_ep.open(pool.clone());
        let gate = InputGate::open(vec![in_ep], &ChannelConfig::default());
        let producer = glommio::spawn_local(async move {
            produce(&out, &pool, 0, 0, 2_000).await;
        });
        let counts = consume(&gate, 0).await;
        producer.await;
        assert_eq!(counts, vec![2_000]);
    })
    .join()
    .unwrap();
}

/// A consumer that stops releasing: the sender never has more than exclusive + floating
/// buffers outstanding, its pool runs dry and `take` waits; everything arrives after.
#[test]
fn credit_bound_and_backpressure() {
    let config = ChannelConfig {
        exclusive_buffers_per_channel: 2,
        floating_buffers_per_gate: 3,
    };
    let bound = config.buffers_in_flight_per_channel_max();
    const POOL: usize = 12;
    const BUFFERS: u64 = 60;
    let manager = ConnectionManager::new(config.clone());
    let out_ep = manager.output_endpoint(id(0, 0));
    let in_ep = manager.input_endpoint(id(0, 0));
    let produced = Arc::new(AtomicUsize::new(0));
    let max_outstanding = Arc::new(AtomicUsize::new(0));
    let producer_done = Arc::new(AtomicBool::new(false));
    let (p2, m2, d2) = (
        produced.clone(),
        max_outstanding.clone(),
        producer_done.clone(),
    );
    let producer = on_core(0, "producer", move || async move {
        let segments = SegmentPool::new(SEGMENT_SIZE_BYTES, POOL);
        let pool = segments.reserve(POOL).unwrap();
        let out = std::rc::Rc::new(out_ep.open(pool.clone()));
        // Monitor: segments neither free nor queued are in flight or at the consumer.
        let (mon_out, mon_pool, mon_max, mon_done) =
            (out.clone(), pool.clone(), m2.clone(), d2.clone());
        glommio::spawn_local(async move {
            while !mon_done.load(Ordering::Relaxed) {
                let outstanding = mon_pool.capacity() - mon_pool.free() - mon_out.backlog();
                mon_max.fetch_max(outstanding, Ordering::Relaxed);
                sleep(Duration::from_micros(200)).await;
            }
        })
        .detach();
        for seq in 0..BUFFERS {
            let seg = pool.take().await;
            let mut b = BufferBuilder::new(seg);
            assert!(b.try_append(&seq).unwrap());
            out.send_buffer(b.finish());
            let outstanding = pool.capacity() - pool.free() - out.backlog();
            m2.fetch_max(outstanding, Ordering::Relaxed);
            p2.store(seq as usize + 1, Ordering::Relaxed);
        }
        out.send_event(Event::EndOfPartition);
        out.drained().await.unwrap();
        d2.store(true, Ordering::Relaxed);
        assert!(pool.in_use_high_water() <= POOL);
    });
    let (p3, m3) = (produced.clone(), max_outstanding.clone());
    let consumer = on_core(1, "consumer", move || async move {
        let gate = InputGate::open(vec![in_ep], &config);
        sleep(Duration::from_millis(300)).await;
        // Exactly the credit bound arrived; the producer filled its pool and waits.
        assert_eq!(gate.buffers_unreleased(0) as usize, bound);
        assert_eq!(gate.queued(), bound);
        assert_eq!(
            p3.load(Ordering::Relaxed),
            POOL,
            "take() must wait, not allocate"
        );
        sleep(Duration::from_millis(100)).await;
        assert_eq!(gate.queued(), bound);
        assert_eq!(p3.load(Ordering::Relaxed), POOL);
        assert!(m3.load(Ordering::Relaxed) <= bound);
        // Take everything without releasing: still nothing more arrives.
        let mut held = Vec::new();
        while let Some((ch, Envelope::Data { buffer, .. })) = gate.try_next().unwrap() {
            held.push((ch, buffer));
        }
        assert_eq!(held.len(), bound);
        sleep(Duration::from_millis(50)).await;
        assert_eq!(gate.queued(), 0);
        let mut expected = 0u64;
        for (ch, buffer) in held {
            let seq: u64 = buffer.decode_records().next().unwrap().unwrap();
            assert_eq!(seq, expected);
            expected += 1;
            gate.release(ch, buffer);
        }
        // Resume: everything else arrives, in order.
        while let Some((ch, env)) = gate.next().await.unwrap() {
            match env {
                Envelope::Data { buffer, .. } => {
                    assert!(gate.buffers_unreleased(ch) as usize <= bound);
                    let seq: u64 = buffer.decode_records().next().unwrap().unwrap();
                    assert_eq!(seq, expected);
                    expected += 1;
                    gate.release(ch, buffer);
                }
                Envelope::Event(e) => assert_eq!(e, Event::EndOfPartition),
            }
        }
        expected
    });
    assert_eq!(consumer.join().unwrap(), BUFFERS);
    producer.join().unwrap();
    let max = max_outstanding.load(Ordering::Relaxed);
    assert!(
        max <= bound,
        "sender had {max} buffers outstanding, bound {bound}"
    );
    assert_eq!(max, bound, "the bound should have been reached");
}

/// Floating credits are lent to the channel that announces a backlog.
#[test]
fn floating_credits_go_to_the_channel_with_backlog() {
    let config = ChannelConfig {
        exclusive_buffers_per_channel: 1,
        floating_buffers_per_gate: 4,
    };
    let manager = ConnectionManager::new(config.clone());
    let busy = manager.output_endpoint(id(0, 0));
    let idle = manager.output_endpoint(id(1, 0));
    let inputs = vec![
        manager.input_endpoint(id(0, 0)),
        manager.input_endpoint(id(1, 0)),
    ];
    let producer = on_core(0, "producers", move || async move {
        let segments = SegmentPool::new(SEGMENT_SIZE_BYTES, 40);
        let busy_pool = segments.reserve(30).unwrap();
        let idle_pool = segments.reserve(2).unwrap();
        let busy = busy.open(busy_pool.clone());
        let idle = idle.open(idle_pool.clone());
        // The idle channel sends one buffer with no backlog behind it.
        let mut b = BufferBuilder::new(idle_pool.take().await);
        b.try_append(&1_000u64).unwrap();
        idle.send_buffer(b.finish());
        idle.send_event(Event::EndOfPartition);
        // The busy channel queues 20 at once.
        for seq in 0..20u64 {
            let mut b = BufferBuilder::new(busy_pool.take().await);
            b.try_append(&seq).unwrap();
            busy.send_buffer(b.finish());
        }
        busy.send_event(Event::EndOfPartition);
        busy.drained().await.unwrap();
        idle.drained().await.unwrap();
    });
    let consumer = on_core(1, "consumer", move || async move {
        let gate = InputGate::open(inputs, &config);
        sleep(Duration::from_millis(300)).await;
        assert_eq!(
            gate.buffers_unreleased(0),
            1 + 4,
            "busy: exclusive + all floating"
        );
        assert_eq!(gate.floating_held(0), 4);
        assert_eq!(gate.buffers_unreleased(1), 1, "idle: exclusive only");
        assert_eq!(gate.floating_held(1), 0);
        assert_eq!(gate.floating_available(), 0);
        let mut counts = [0u32; 2];
        while let Some((ch, env)) = gate.next().await.unwrap() {
            if let Envelope::Data { buffer, .. } = env {
                assert!(gate.buffers_unreleased(ch) <= 5);
                counts[ch] += 1;
                gate.release(ch, buffer);
            }
        }
        counts
    });
    assert_eq!(consumer.join().unwrap(), [20, 1]);
    producer.join().unwrap();
}

/// A producer that goes away before EndOfPartition: the consumer gets what was sent,
/// then PeerGone.
#[test]
fn producer_gone_before_end_of_partition() {
    let manager = ConnectionManager::new(ChannelConfig::default());
    let out_ep = manager.output_endpoint(id(3, 0));
    let in_ep = manager.input_endpoint(id(3, 0));
    let producer = on_core(0, "producer", move || async move {
        let segments = SegmentPool::new(SEGMENT_SIZE_BYTES, 4);
        let pool = segments.reserve(4).unwrap();
        let out = out_ep.open(pool.clone());
        for seq in 0..2u64 {
            let mut b = BufferBuilder::new(pool.take().await);
            b.try_append(&seq).unwrap();
            out.send_buffer(b.finish());
        }
        out.drained().await.unwrap();
        drop(out); // no EndOfPartition
        sleep(Duration::from_millis(100)).await;
    });
    let consumer = on_core(1, "consumer", move || async move {
        let gate = InputGate::open(vec![in_ep], &ChannelConfig::default());
        let mut data = 0;
        loop {
            match gate.next().await {
                Ok(Some((ch, Envelope::Data { buffer, .. }))) => {
                    data += 1;
                    gate.release(ch, buffer);
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(NetError::PeerGone { channel }) => {
                    assert_eq!(channel, id(3, 0));
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(!gate.is_finished());
        data
    });
    assert_eq!(consumer.join().unwrap(), 2);
    producer.join().unwrap();
}

/// A consumer that drops its gate while data is still queued at the producer: drained
/// reports PeerGone and the queued segments return to the producer's pool.
#[test]
fn consumer_gone_with_data_queued() {
    let config = ChannelConfig {
        exclusive_buffers_per_channel: 1,
        floating_buffers_per_gate: 0,
    };
    let manager = ConnectionManager::new(config.clone());
    let out_ep = manager.output_endpoint(id(4, 0));
    let in_ep = manager.input_endpoint(id(4, 0));
    let consumer = on_core(1, "consumer", move || async move {
        let gate = InputGate::open(vec![in_ep], &config);
        sleep(Duration::from_millis(200)).await;
        assert_eq!(gate.queued(), 1);
        drop(gate);
        sleep(Duration::from_millis(100)).await;
    });
    let producer = on_core(0, "producer", move || async move {
        let segments = SegmentPool::new(SEGMENT_SIZE_BYTES, 8);
        let pool = segments.reserve(8).unwrap();
        let out = out_ep.open(pool.clone());
        for seq in 0..5u64 {
            let mut b = BufferBuilder::new(pool.take().await);
            b.try_append(&seq).unwrap();
            out.send_buffer(b.finish());
        }
        match out.drained().await {
            Err(NetError::PeerGone { channel }) => assert_eq!(channel, id(4, 0)),
            other => panic!("expected PeerGone, got {other:?}"),
        }
        sleep(Duration::from_millis(50)).await;
        // Queued buffers and the one the gate held came back.
        assert_eq!(pool.free(), 8);
    });
    consumer.join().unwrap();
    producer.join().unwrap();
}

/// A producer that sends nothing but watermarks, many more than the send queue
/// holds, to a consumer that does not read at first (its ring fills). Watermarks
/// queued behind one another collapse into the newest: the producer neither
/// panics nor queues without bound, and the consumer sees increasing watermarks
/// ending with the last one sent, then the end of the partition.
#[test]
fn watermarks_without_data_do_not_pile_up() {
    const WATERMARKS: i64 = 4 * (1 << 16);
    let manager = ConnectionManager::new(ChannelConfig::default());
    let out_ep = manager.output_endpoint(id(5, 0));
    let in_ep = manager.input_endpoint(id(5, 0));
    let consumer = on_core(1, "consumer", move || async move {
        let gate = InputGate::open(vec![in_ep], &ChannelConfig::default());
        sleep(Duration::from_millis(200)).await;
        let mut seen = Vec::new();
        while let Some((_, env)) = gate.next().await.unwrap() {
            match env {
                Envelope::Event(Event::Watermark(w)) => seen.push(w),
                Envelope::Event(Event::EndOfPartition) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        seen
    });
    let producer = on_core(0, "producer", move || async move {
        let segments = SegmentPool::new(SEGMENT_SIZE_BYTES, 4);
        let pool = segments.reserve(4).unwrap();
        let out = out_ep.open(pool);
        for w in 0..WATERMARKS {
            out.send_event(Event::Watermark(w));
        }
        out.send_event(Event::EndOfPartition);
        out.drained().await.unwrap();
    });
    producer.join().unwrap();
    let seen = consumer.join().unwrap();
    assert!(
        seen.windows(2).all(|p| p[0] < p[1]),
        "watermarks out of order"
    );
    assert_eq!(seen.last(), Some(&(WATERMARKS - 1)));
    assert!(
        seen.len() < 1 << 16,
        "{} watermarks delivered: none were collapsed",
        seen.len()
    );
}
