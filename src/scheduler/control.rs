//! The API's view of the scheduler ([`crate::api::Control`]).

use super::{Scheduler, Trigger, Work};
use crate::api::{Accepted, Control, ControlError};

impl Control for Scheduler {
    fn run_now(&self, job: &str) -> Result<Accepted, ControlError> {
        self.trigger(job, Work::Backup, Trigger::Manual)?;
        Ok(Accepted::backup(job))
    }

    fn verify_now(&self, job: &str) -> Result<Accepted, ControlError> {
        self.trigger(job, Work::Verify, Trigger::Manual)?;
        Ok(Accepted::verify(job))
    }

    fn next_run(&self, job: &str) -> Option<jiff::Timestamp> {
        Scheduler::next_run(self, job)
    }

    fn running(&self, job: &str) -> bool {
        Scheduler::running(self, job)
    }

    fn ready(&self) -> Result<(), String> {
        Scheduler::ready(self)
    }
}
