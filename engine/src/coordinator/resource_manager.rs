//! The resource manager and its slot manager: which task executors exist, how
//! many slots each has free, and which executor should give a job its slots.
//!
//! Pure state: it decides, the coordinator's edge sends the messages.
//! Invariant: `free <= total` for every executor; a job's slots are spread
//! round-robin over executors so parallel subtasks land on different cores.

use crate::coordinator::messages::{ExecutorId, ExecutorMsg, Mailbox};

pub(crate) struct RegisteredExecutor {
    pub(crate) mailbox: Mailbox<ExecutorMsg>,
    pub(crate) total: u32,
    pub(crate) free: u32,
}

#[derive(Default)]
pub(crate) struct ResourceManager {
    pub(crate) executors: Vec<Option<RegisteredExecutor>>,
}

impl ResourceManager {
    pub(crate) fn register(
        &mut self,
        executor: ExecutorId,
        slots: u32,
        mailbox: Mailbox<ExecutorMsg>,
    ) {
        if self.executors.len() <= executor {
            self.executors.resize_with(executor + 1, || None);
        }
        self.executors[executor] = Some(RegisteredExecutor {
            mailbox,
            total: slots,
            free: slots,
        });
    }

    /// Forgets an executor that died.
    pub(crate) fn lose(&mut self, executor: ExecutorId) {
        if let Some(e) = self.executors.get_mut(executor) {
            *e = None;
        }
    }

    pub(crate) fn registered(&self) -> usize {
        self.executors.iter().flatten().count()
    }

    pub(crate) fn report(&mut self, executor: ExecutorId, free_slots: u32) {
        if let Some(Some(e)) = self.executors.get_mut(executor) {
            e.free = free_slots.min(e.total);
        }
    }

    pub(crate) fn free_slots(&self) -> u32 {
        self.executors.iter().flatten().map(|e| e.free).sum()
    }

    /// Picks executors for `count` slots, round-robin over executors with free
    /// slots, and marks them taken. `None` if there are not enough.
    pub(crate) fn allocate(&mut self, count: u32) -> Option<Vec<ExecutorId>> {
        if self.free_slots() < count {
            return None;
        }
        let mut chosen = Vec::with_capacity(count as usize);
        while chosen.len() < count as usize {
            for (id, e) in self.executors.iter_mut().enumerate() {
                if chosen.len() == count as usize {
                    break;
                }
                if let Some(e) = e {
                    if e.free > 0 {
                        e.free -= 1;
                        chosen.push(id);
                    }
                }
            }
        }
        Some(chosen)
    }

    pub(crate) fn mailbox(&self, executor: ExecutorId) -> Option<&Mailbox<ExecutorMsg>> {
        self.executors
            .get(executor)
            .and_then(|e| e.as_ref())
            .map(|e| &e.mailbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_slots_round_robin_and_refuses_too_many() {
        let mut rm = ResourceManager::default();
        for id in 0..3 {
            let (mb, _rx) = crate::coordinator::messages::mailbox();
            rm.register(id, 2, mb);
        }
        assert_eq!(rm.allocate(4), Some(vec![0, 1, 2, 0]));
        assert_eq!(rm.free_slots(), 2);
        assert_eq!(rm.allocate(3), None);
        assert_eq!(rm.allocate(2), Some(vec![1, 2]));
        assert_eq!(rm.free_slots(), 0);
    }
}
