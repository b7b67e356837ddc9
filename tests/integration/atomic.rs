//! Files are replaced atomically: a concurrent reader sees the old or the new content, whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kagent_proto::v1::OperationState;
use kagent_tests::*;

const SIZE: usize = 1 << 20;
const ROUNDS: usize = 20;

#[derive(Default, Debug)]
struct ReadStats {
    reads: u64,
    saw_a: u64,
    saw_b: u64,
    bad: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_never_sees_a_partial_file() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    let path = agent.root.join("big/data.bin");
    let a = vec![b'a'; SIZE];
    let b = vec![b'b'; SIZE];
    apply_events(&mut c, host_spec(vec![file("big", &path, a.clone())])).await;
    assert_eq!(std::fs::read(&path).unwrap(), a);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let mut st = ReadStats::default();
            while !stop.load(Ordering::Relaxed) {
                st.reads += 1;
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let first = bytes.first().copied();
                        let uniform = first.is_some_and(|f| bytes.iter().all(|x| *x == f));
                        if bytes.len() == SIZE && uniform && first == Some(b'a') {
                            st.saw_a += 1;
                        } else if bytes.len() == SIZE && uniform && first == Some(b'b') {
                            st.saw_b += 1;
                        } else if st.bad.len() < 10 {
                            let na = bytes.iter().filter(|x| **x == b'a').count();
                            let nb = bytes.iter().filter(|x| **x == b'b').count();
                            st.bad
                                .push(format!("len {} ({na} 'a', {nb} 'b')", bytes.len()));
                        } else {
                            st.bad.push(String::new());
                        }
                    }
                    Err(e) => st.bad.push(format!("read error: {e}")),
                }
            }
            st
        })
    };

    for i in 0..ROUNDS {
        let content = if i % 2 == 0 { b.clone() } else { a.clone() };
        let events = apply_events(&mut c, host_spec(vec![file("big", &path, content)])).await;
        assert_eq!(
            state(&finished(&events)),
            OperationState::Succeeded,
            "round {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let st = reader.join().expect("reader thread");
    assert!(
        st.bad.is_empty(),
        "{} of {} reads saw a partial/mixed/missing file, e.g. {:?}",
        st.bad.len(),
        st.reads,
        st.bad
            .iter()
            .filter(|s| !s.is_empty())
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        st.saw_a > 0 && st.saw_b > 0,
        "the reader must have seen both contents: {st:?}"
    );
    // The last round (i = 19) wrote A.
    assert_eq!(std::fs::read(&path).unwrap(), a);
}
