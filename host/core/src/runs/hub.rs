//! Live notification of new events: a watch channel per run carrying the
//! highest stored seq. Readers always read events from the store; the hub
//! only says "there is more", so nothing can be seen before it is durable.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Default)]
pub struct EventHub {
    runs: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl EventHub {
    /// Watch a run's last seq (`current` seeds a new channel).
    pub fn subscribe(&self, run_id: &str, current: u64) -> watch::Receiver<u64> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.entry(run_id.to_string()).or_insert_with(|| watch::channel(current).0).subscribe()
    }

    /// Events up to `seq` are stored.
    pub fn notify(&self, run_id: &str, seq: u64) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let tx = runs.entry(run_id.to_string()).or_insert_with(|| watch::channel(0).0);
        tx.send_if_modified(|cur| {
            if seq > *cur {
                *cur = seq;
                true
            } else {
                false
            }
        });
    }

    /// The run is terminal: drop its channel once nobody listens.
    pub fn close(&self, run_id: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.get(run_id).is_some_and(|tx| tx.receiver_count() == 0) {
            runs.remove(run_id);
        }
    }
}
