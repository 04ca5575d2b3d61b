//! Fan-out of a process's output to every stream attached to it.
//!
//! Output is read once and delivered to each subscriber in order, with back
//! pressure (a subscriber's bounded queue full means the reader waits, and so
//! does the process writing): no subscriber ever misses a chunk. Subscribers
//! that went away are dropped. With no subscribers, output is discarded and
//! the process runs on. The end event follows all output, and a subscriber
//! arriving after the end gets the end event at once.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;
use warren_proto::process::process_event::EndEvent;

/// A chunk of output.
#[derive(Clone, Debug)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    Pty(Bytes),
}

/// What a subscriber receives.
#[derive(Clone, Debug)]
pub enum Event {
    Data(Output),
    End(EndEvent),
}

/// A subscriber's view: live events, or the end that already happened.
#[derive(Debug)]
pub enum Subscription {
    Live(mpsc::Receiver<Event>),
    Ended(EndEvent),
}

const QUEUE: usize = 64;

#[derive(Debug, Default)]
struct State {
    subscribers: Vec<mpsc::Sender<Event>>,
    end: Option<EndEvent>,
}

#[derive(Debug, Default)]
pub struct Fanout {
    state: Mutex<State>,
}

impl Fanout {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> Subscription {
        let mut st = self.state();
        if let Some(end) = &st.end {
            return Subscription::Ended(end.clone());
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        st.subscribers.push(tx);
        Subscription::Live(rx)
    }

    /// Delivers `out` to every live subscriber, waiting for room in each.
    pub async fn publish(&self, out: Output) {
        let subscribers = self.state().subscribers.clone();
        let mut gone = Vec::new();
        for (i, sub) in subscribers.iter().enumerate() {
            if sub.send(Event::Data(out.clone())).await.is_err() {
                gone.push(i);
            }
        }
        if !gone.is_empty() {
            self.state().subscribers.retain(|s| !s.is_closed());
        }
    }

    /// Delivers the end event to every subscriber and closes their streams.
    pub async fn finish(&self, end: EndEvent) {
        let subscribers = {
            let mut st = self.state();
            st.end = Some(end.clone());
            std::mem::take(&mut st.subscribers)
        };
        for sub in subscribers {
            let _ = sub.send(Event::End(end.clone())).await;
        }
    }
}
