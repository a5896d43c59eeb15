//! CPU time, for figures per CPU-second: the whole process (every thread, live or gone) and single threads.

use std::time::Duration;

/// User + system time of the whole process so far.
pub fn process() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass and keeps no pointer to it.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Time thread `tid` of this process has run (the scheduler's own account, in ns).
pub fn thread(tid: i64) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// The calling thread's kernel id.
pub fn current_tid() -> i64 {
    i64::from(unsafe { libc::gettid() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_shows_in_its_own_time_and_in_the_process() {
        // Spin until the thread's own clock shows 30 ms (however busy the machine), then the process's must too.
        let (p0, t0) = (process(), thread(current_tid()));
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while thread(current_tid()) - t0 < Duration::from_millis(30) {
            assert!(start.elapsed() < Duration::from_secs(10), "the thread's CPU time never reached 30 ms");
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        assert!(process() - p0 >= Duration::from_millis(30));
    }
}
