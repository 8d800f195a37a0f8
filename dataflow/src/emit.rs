//! Where the dataflow's results go: per worker, an [`Emitter`] receives every alert, dead
//! letter and valid transaction. The terminal emitter prints alerts; tests collect everything;
//! the Kafka and lakehouse emitters come with their issues.

use std::io::Write;
use std::sync::{Arc, Mutex};

use model::{Alert, DeadLetter};

use crate::judge::Valid;

/// The outputs of one worker.
pub trait Emitter {
    fn alert(&mut self, alert: &Alert);
    fn dead_letter(&mut self, dead: &DeadLetter, key: Option<&[u8]>);
    fn transaction(&mut self, valid: &Valid);
    /// Whether [`Emitter::transaction`] does anything with them: when neither the emitters
    /// nor the lakehouse want the valid transactions, the judge does not send them on.
    fn wants_transactions(&self) -> bool {
        false
    }
    /// Called at the end of each activation of the worker's outputs, with whether its source
    /// is reading a backlog ([`crate::source::Backlog`]). An emitter may hold what it was given
    /// while `backlog` is true, to send it in larger batches; it then returns how soon it must be
    /// called again, whether or not more comes.
    fn flush(&mut self, _backlog: bool) -> Option<std::time::Duration> {
        None
    }
    /// Called once at the end: everything emitted must be delivered before it returns.
    fn finish(&mut self) {
        self.flush(false);
    }
}

/// Prints each alert as a JSON line on stdout (dead letters and transactions are only counted,
/// by the progress line).
pub struct Terminal {
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Terminal {
    pub fn new() -> Self {
        Terminal {
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal::new()
    }
}

impl Emitter for Terminal {
    fn alert(&mut self, alert: &Alert) {
        let _ = writeln!(self.out, "{}", alert.to_json());
    }
    fn dead_letter(&mut self, _: &DeadLetter, _: Option<&[u8]>) {}
    fn transaction(&mut self, _: &Valid) {}
    fn flush(&mut self, _: bool) -> Option<std::time::Duration> {
        let _ = self.out.flush();
        None
    }
}

/// A dead letter and the input record's key.
pub type Keyed = (DeadLetter, Option<Vec<u8>>);

/// Everything every worker emitted, for tests.
#[derive(Clone, Default)]
pub struct Collected {
    pub alerts: Arc<Mutex<Vec<Alert>>>,
    pub dead_letters: Arc<Mutex<Vec<Keyed>>>,
    pub transactions: Arc<Mutex<Vec<Valid>>>,
}

impl Emitter for Collected {
    fn alert(&mut self, alert: &Alert) {
        self.alerts.lock().unwrap().push(alert.clone());
    }
    fn dead_letter(&mut self, dead: &DeadLetter, key: Option<&[u8]>) {
        self.dead_letters
            .lock()
            .unwrap()
            .push((dead.clone(), key.map(<[u8]>::to_vec)));
    }
    fn transaction(&mut self, valid: &Valid) {
        self.transactions.lock().unwrap().push(valid.clone());
    }
    fn wants_transactions(&self) -> bool {
        true
    }
}
