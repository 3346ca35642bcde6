//! Collectors: how chained operators call each other directly.
//!
//! An operator chain is a tree of `Box<dyn Collector<T>>`: each operator owns the
//! collector of its output and pushes records into it, so chained operators cost
//! one virtual call per record and no serialization. The leaves are network
//! writers (`runtime::writer`) or sinks.
//!
//! Invariant: `finish` is called once, after the last `collect`, and an operator
//! forwards it downstream after emitting whatever it held back.

use crate::error::{TaskError, TaskLocation, TaskResult};

/// Receives the records of one operator's output.
pub trait Collector<T> {
    fn collect(&mut self, record: T) -> TaskResult;
    /// End of input: emit anything held back, then finish downstream.
    fn finish(&mut self) -> TaskResult;
    /// The event-time watermark advanced to `watermark` (milliseconds): no
    /// record with a timestamp at or below it is expected any more. Operators
    /// act on it (fire windows, timers) and forward it after what they emit.
    /// The default drops it, which is right only for sinks.
    fn watermark(&mut self, _watermark: i64) -> TaskResult {
        Ok(())
    }
    /// The input went idle (`true`) or became active again: operators
    /// forward it, writers send it on so consumers stop (or resume) waiting
    /// for this input's watermark. The default drops it (sinks).
    fn watermark_status(&mut self, _idle: bool) -> TaskResult {
        Ok(())
    }
}

/// An operator shared with the task's processing-time service: the chain
/// calls it through this handle, the service through its own.
pub(crate) struct Shared<C>(pub(crate) std::rc::Rc<std::cell::RefCell<C>>);

impl<T, C: Collector<T>> Collector<T> for Shared<C> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        self.0.borrow_mut().collect(record)
    }
    fn finish(&mut self) -> TaskResult {
        self.0.borrow_mut().finish()
    }
    fn watermark(&mut self, watermark: i64) -> TaskResult {
        self.0.borrow_mut().watermark(watermark)
    }
    fn watermark_status(&mut self, idle: bool) -> TaskResult {
        self.0.borrow_mut().watermark_status(idle)
    }
}

pub type BoxCollector<T> = Box<dyn Collector<T>>;

impl<T> Collector<T> for BoxCollector<T> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        (**self).collect(record)
    }
    fn finish(&mut self) -> TaskResult {
        (**self).finish()
    }
    fn watermark(&mut self, watermark: i64) -> TaskResult {
        (**self).watermark(watermark)
    }
    fn watermark_status(&mut self, idle: bool) -> TaskResult {
        (**self).watermark_status(idle)
    }
}

/// Sends every record to several collectors (an operator with more than one
/// consumer). The last consumer receives the original, the others clones.
pub(crate) struct FanOut<T> {
    pub(crate) outputs: Vec<BoxCollector<T>>,
}

impl<T: Clone> Collector<T> for FanOut<T> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        let (last, rest) = self.outputs.split_last_mut().expect("fan-out has outputs");
        for out in rest {
            out.collect(record.clone())?;
        }
        last.collect(record)
    }
    fn finish(&mut self) -> TaskResult {
        for out in &mut self.outputs {
            out.finish()?;
        }
        Ok(())
    }
    fn watermark(&mut self, watermark: i64) -> TaskResult {
        for out in &mut self.outputs {
            out.watermark(watermark)?;
        }
        Ok(())
    }
    fn watermark_status(&mut self, idle: bool) -> TaskResult {
        for out in &mut self.outputs {
            out.watermark_status(idle)?;
        }
        Ok(())
    }
}

/// The output of a sink: nothing downstream.
pub(crate) struct NoOutput;

impl<T> Collector<T> for NoOutput {
    #[inline]
    fn collect(&mut self, _record: T) -> TaskResult {
        Ok(())
    }
    fn finish(&mut self) -> TaskResult {
        Ok(())
    }
}

/// What a user function emits into: infallible for the user; the first
/// downstream error is kept and returned by the operator after the call.
pub struct Emitter<'a, T> {
    out: &'a mut dyn Collector<T>,
    error: Option<Box<TaskError>>,
}

impl<'a, T> Emitter<'a, T> {
    pub(crate) fn new(out: &'a mut dyn Collector<T>) -> Self {
        Emitter { out, error: None }
    }

    /// Emits one record downstream. After a downstream failure further records
    /// are dropped; the failure fails the task.
    #[inline]
    pub fn emit(&mut self, record: T) {
        if self.error.is_none() {
            if let Err(e) = self.out.collect(record) {
                self.error = Some(e);
            }
        }
    }

    pub(crate) fn into_result(self) -> TaskResult {
        match self.error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Runs a user function, turning a panic into a task error naming the operator.
#[inline]
pub(crate) fn guarded<R>(location: &TaskLocation, f: impl FnOnce() -> R) -> TaskResult<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| user_function_error(location, payload.as_ref()))
}

#[cold]
fn user_function_error(
    location: &TaskLocation,
    payload: &(dyn std::any::Any + Send),
) -> Box<TaskError> {
    Box::new(TaskError::UserFunction {
        location: location.clone(),
        message: crate::error::panic_message(payload),
    })
}

/// [`guarded_chain`] for an operator's call on one record: `body` receives the
/// record by value. The record stays where the caller passed it instead of being
/// moved into the guard's closure, which copied it (some hundred bytes for a
/// Nexmark event) before the operator had looked at it.
#[inline]
pub(crate) fn guarded_chain_record<T, R>(
    location: &TaskLocation,
    record: T,
    body: impl FnOnce(&ChainGuard, T) -> TaskResult<R>,
) -> TaskResult<R> {
    let mut record = std::mem::ManuallyDrop::new(record);
    let slot = &mut record;
    guarded_chain(location, move |chain| {
        // SAFETY: `slot` holds an initialized record (from `ManuallyDrop::new`
        // above) that nothing else reads: this is the only read of it, the
        // closure runs at most once, and the `ManuallyDrop` is never dropped,
        // so the record has exactly one owner, `body`. (Should the closure
        // never run, the record would leak, never be dropped twice.)
        let record = unsafe { std::mem::ManuallyDrop::take(slot) };
        body(chain, record)
    })
}

/// Whether the code running inside [`guarded_chain`] is the operator's own (user
/// code) or a call downstream.
pub(crate) struct ChainGuard {
    in_user_code: std::cell::Cell<bool>,
}

impl ChainGuard {
    /// Passes `record` to `out`, outside the operator's attribution: a panic in
    /// it is not this operator's. (A method, not a closure around the call, so
    /// that the record is not copied into a closure.)
    #[inline]
    pub(crate) fn collect<T, C: Collector<T> + ?Sized>(
        &self,
        out: &mut C,
        record: T,
    ) -> TaskResult {
        self.in_user_code.set(false);
        let result = out.collect(record);
        self.in_user_code.set(true);
        result
    }
}

/// Like [`guarded`] around every user call of `body`, in one guard: `body` runs
/// user code and passes records on through [`ChainGuard::collect`]. A panic in
/// user code becomes the task error naming the operator, as [`guarded`] makes
/// it; a panic downstream continues unwinding as if this guard were not there. One guard per record (or per batch) instead
/// of one per call keeps records from being copied through the guard's result.
#[inline]
pub(crate) fn guarded_chain<R>(
    location: &TaskLocation,
    body: impl FnOnce(&ChainGuard) -> TaskResult<R>,
) -> TaskResult<R> {
    let guard = ChainGuard {
        in_user_code: std::cell::Cell::new(true),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&guard))) {
        Ok(result) => result,
        Err(payload) if guard.in_user_code.get() => {
            Err(user_function_error(location, payload.as_ref()))
        }
        Err(payload) => std::panic::resume_unwind(payload),
    }
}
