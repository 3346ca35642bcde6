//! The receiver's credit bookkeeping for one input gate, as a pure state machine with
//! no I/O: the gate feeds it arrivals and releases and sends whatever credits it
//! decides. Per channel it keeps the invariant
//! `in_use + outstanding == exclusive + floating_held`, where `outstanding` counts
//! credits granted but not yet consumed by an arrived buffer and `in_use` counts
//! arrived buffers not yet released. Floating credits are lent to channels whose
//! announced backlog exceeds their outstanding credit and return to the gate when a
//! buffer is released from a channel that no longer needs them.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ChannelCredit {
    pub(crate) outstanding: u32,
    pub(crate) in_use: u32,
    pub(crate) floating_held: u32,
    pub(crate) backlog: u32,
}

impl ChannelCredit {
    fn wants_floating(&self) -> bool {
        self.outstanding < self.backlog
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CreditLedger {
    exclusive: u32,
    floating_total: u32,
    floating_available: u32,
    channels: Vec<ChannelCredit>,
    /// Round-robin start for lending floating credits, so no channel is always last.
    next_lend: usize,
}

impl CreditLedger {
    /// Every channel starts with `exclusive` outstanding credits (the caller sends them
    /// as the initial grant).
    pub(crate) fn new(channels: usize, exclusive: u32, floating: u32) -> Self {
        CreditLedger {
            exclusive,
            floating_total: floating,
            floating_available: floating,
            channels: vec![
                ChannelCredit {
                    outstanding: exclusive,
                    ..ChannelCredit::default()
                };
                channels
            ],
            next_lend: 0,
        }
    }

    pub(crate) fn initial_credit(&self) -> u32 {
        self.exclusive
    }

    pub(crate) fn channel(&self, ch: usize) -> ChannelCredit {
        self.channels[ch]
    }

    pub(crate) fn floating_available(&self) -> u32 {
        self.floating_available
    }

    /// A data buffer arrived on `ch` announcing `backlog` more queued at the sender.
    /// Calls `grant(channel, credits)` for any floating credit lent.
    pub(crate) fn on_data(&mut self, ch: usize, backlog: u32, grant: &mut impl FnMut(usize, u32)) {
        let c = &mut self.channels[ch];
        assert!(
            c.outstanding > 0,
            "protocol violation: channel {ch} sent a data buffer without credit"
        );
        c.outstanding -= 1;
        c.in_use += 1;
        c.backlog = backlog;
        if c.wants_floating() && self.floating_available > 0 {
            let n = (c.backlog - c.outstanding).min(self.floating_available);
            c.outstanding += n;
            c.floating_held += n;
            self.floating_available -= n;
            grant(ch, n);
        }
        self.check(ch);
    }

    /// The consumer released a buffer of `ch`. Returns the credits to send back to `ch`
    /// with its segment (0 or 1); calls `grant` for floating credits lent to other
    /// channels as a consequence.
    pub(crate) fn on_release(&mut self, ch: usize, grant: &mut impl FnMut(usize, u32)) -> u32 {
        let c = &mut self.channels[ch];
        assert!(
            c.in_use > 0,
            "released more buffers of channel {ch} than arrived"
        );
        c.in_use -= 1;
        let back = if c.floating_held > 0 && !c.wants_floating() {
            c.floating_held -= 1;
            self.floating_available += 1;
            0
        } else {
            c.outstanding += 1;
            1
        };
        self.check(ch);
        self.lend_floating(grant);
        back
    }

    /// Lends available floating credits to channels with unmet backlog.
    fn lend_floating(&mut self, grant: &mut impl FnMut(usize, u32)) {
        let n = self.channels.len();
        let mut i = 0;
        while self.floating_available > 0 && i < n {
            let ch = (self.next_lend + i) % n;
            let c = &mut self.channels[ch];
            if c.wants_floating() {
                let k = (c.backlog - c.outstanding).min(self.floating_available);
                c.outstanding += k;
                c.floating_held += k;
                self.floating_available -= k;
                grant(ch, k);
                self.next_lend = (ch + 1) % n;
            }
            i += 1;
        }
    }

    fn check(&self, ch: usize) {
        let c = &self.channels[ch];
        assert_eq!(
            c.in_use + c.outstanding,
            self.exclusive + c.floating_held,
            "credit invariant broken on channel {ch}: {c:?}"
        );
        debug_assert_eq!(
            self.floating_available + self.channels.iter().map(|c| c.floating_held).sum::<u32>(),
            self.floating_total
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn floating_goes_to_the_channel_with_backlog() {
        let mut l = CreditLedger::new(2, 1, 4);
        let mut grants = Vec::new();
        l.on_data(0, 10, &mut |c, n| grants.push((c, n)));
        assert_eq!(grants, vec![(0, 4)]);
        assert_eq!(l.channel(0).floating_held, 4);
        assert_eq!(l.floating_available(), 0);
        grants.clear();
        // Channel 1 announces a backlog too but nothing is left to lend.
        l.on_data(1, 3, &mut |c, n| grants.push((c, n)));
        assert!(grants.is_empty());
        // Channel 0 still has backlog: a release re-grants to channel 0.
        assert_eq!(l.on_release(0, &mut |c, n| grants.push((c, n))), 1);
        assert!(grants.is_empty());
        // Channel 0 drained (backlog 0): a release returns its floating credit, which
        // goes to channel 1.
        for _ in 0..5 {
            l.on_data(0, 0, &mut |c, n| grants.push((c, n)));
        }
        assert_eq!(l.on_release(0, &mut |c, n| grants.push((c, n))), 0);
        assert_eq!(grants, vec![(1, 1)]);
    }

    proptest! {
        /// Random arrivals (only when a credit is outstanding) and releases keep every
        /// channel within exclusive + floating buffers and the gate within its float.
        #[test]
        fn credit_bounds_hold(ops in proptest::collection::vec((0usize..3, any::<bool>(), 0u32..20), 1..400)) {
            let (exclusive, floating) = (2u32, 5u32);
            let mut l = CreditLedger::new(3, exclusive, floating);
            for (ch, arrive, backlog) in ops {
                let c = l.channel(ch);
                if arrive && c.outstanding > 0 {
                    l.on_data(ch, backlog, &mut |_, _| {});
                } else if c.in_use > 0 {
                    l.on_release(ch, &mut |_, _| {});
                }
                let mut held = 0;
                for i in 0..3 {
                    let c = l.channel(i);
                    prop_assert!(c.in_use + c.outstanding <= exclusive + floating);
                    prop_assert!(c.outstanding >= 1 || c.in_use >= 1, "channel {} starved: {:?}", i, c);
                    held += c.floating_held;
                }
                prop_assert_eq!(held + l.floating_available(), floating);
            }
        }
    }
}
